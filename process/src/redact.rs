//! Secrets kept out of logs and error messages.

/// A connection URL with its password hidden, so it can be logged:
/// `postgres://order:***@host/db`, `redis://:***@host/`.
pub fn url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn only_the_password_is_hidden() {
        assert_eq!(url("postgres://order:secret@127.0.0.1:5432/order"), "postgres://order:***@127.0.0.1:5432/order");
        assert_eq!(url("redis://:secret@127.0.0.1:6379/"), "redis://:***@127.0.0.1:6379/");
        assert_eq!(url("postgres://127.0.0.1/db"), "postgres://127.0.0.1/db");
        assert_eq!(url("postgres://user@host/db"), "postgres://user@host/db");
    }
}
