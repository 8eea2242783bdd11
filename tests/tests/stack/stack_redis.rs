//! Redis is real: a value with a time-to-live makes the round trip.

use saga_tests::{stack, unique};

#[tokio::test]
async fn set_get_expire_delete_round_trip() {
    let client = redis::Client::open(stack().redis_url()).expect("redis url");
    let mut connection = client.get_multiplexed_async_connection().await.expect("connect");
    let key = unique("it-redis");
    let () =
        redis::cmd("SET").arg(&key).arg("value").arg("EX").arg(60).query_async(&mut connection).await.expect("set");
    let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut connection).await.expect("get");
    assert_eq!(value.as_deref(), Some("value"));
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut connection).await.expect("ttl");
    assert!((1..=60).contains(&ttl), "ttl {ttl}");
    let deleted: i64 = redis::cmd("DEL").arg(&key).query_async(&mut connection).await.expect("del");
    assert_eq!(deleted, 1);
    let gone: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut connection).await.expect("get");
    assert_eq!(gone, None);
}
