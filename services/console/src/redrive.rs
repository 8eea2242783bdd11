//! The dead-letter view and its redrive. A redrive puts a dead letter back on the topic it
//! came from, once: the audit row (who, when, which message) is written in the same
//! transaction that waits for the broker's acknowledgement, and its key is the dead letter's
//! position, so asking twice (or two admins at once) redrives it once. Should the commit be
//! lost after the broker took the message, a second redrive sends a copy that the
//! consumers' inbox drops.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use saga_operator::dlq::{self, DeadLetter, DlqError};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::api::{ConsoleError, State};

/// Newest dead letters shown per topic.
const SHOWN: usize = 200;

#[derive(Debug, Serialize)]
pub struct Listing {
    pub topics: Vec<TopicLetters>,
}

#[derive(Debug, Serialize)]
pub struct TopicLetters {
    /// The saga topic the letters came from, where a redrive sends them.
    pub topic: String,
    pub dlq: String,
    /// How many the DLQ topic holds (the newest [`SHOWN`] are listed).
    pub total: usize,
    pub letters: Vec<Letter>,
}

#[derive(Debug, Serialize)]
pub struct Letter {
    #[serde(flatten)]
    pub letter: DeadLetter,
    /// Set once it was redriven.
    pub redriven: Option<Redriven>,
}

#[derive(Debug, Serialize)]
pub struct Redriven {
    pub by: String,
    pub at: DateTime<Utc>,
}

/// One dead letter, by its place in its DLQ topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LetterRef {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// `{"confirm": true, "messages": [{"topic": "order-events.dlq", "partition": 0, "offset": 3}]}`,
/// or `{"confirm": true, "all": true}` for every dead letter not redriven yet.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    #[serde(default)]
    pub confirm: bool,
    #[serde(default)]
    pub messages: Vec<LetterRef>,
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    /// Put back on their topic by this request.
    pub redriven: Vec<LetterRef>,
    /// Redriven before (by this admin or another): nothing sent again.
    pub already: Vec<LetterRef>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub dlq_topic: String,
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub target_topic: String,
    pub saga_key: Option<String>,
    pub event_type: String,
    pub admin: String,
    pub redriven_at: DateTime<Utc>,
}

fn unavailable(what: &str) -> impl Fn(sqlx::Error) -> ConsoleError + '_ {
    move |e| ConsoleError::Unavailable(format!("{what}: {e}"))
}

fn kafka(e: DlqError) -> ConsoleError {
    match e {
        DlqError::NoMessage { .. } => ConsoleError::BadRequest(e.to_string()),
        other => ConsoleError::Unavailable(other.to_string()),
    }
}

/// Every DLQ topic with its newest letters, each marked when it was redriven.
pub async fn list(state: &State) -> Result<Listing, ConsoleError> {
    let redriven: Vec<(String, i32, i64, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT dlq_topic, dlq_partition, dlq_offset, admin, redriven_at FROM redrive_audit")
            .fetch_all(&state.audit)
            .await
            .map_err(unavailable("the redrive audit"))?;
    let mut by_letter: BTreeMap<(String, i32, i64), Redriven> =
        redriven.into_iter().map(|(t, p, o, by, at)| ((t, p, o), Redriven { by, at })).collect();
    let mut topics = Vec::new();
    for (topic, dlq) in dlq::topics(&state.sources.prefix) {
        let brokers = state.sources.brokers.clone();
        let read_from = dlq.clone();
        let messages = tokio::task::spawn_blocking(move || dlq::read(&brokers, &read_from, None))
            .await
            .map_err(|e| ConsoleError::Unavailable(e.to_string()))?
            .map_err(kafka)?;
        let total = messages.len();
        let mut letters: Vec<Letter> = messages
            .iter()
            .map(|m| {
                let letter = DeadLetter::of(m);
                let redriven = by_letter.remove(&(letter.topic.clone(), letter.partition, letter.offset));
                Letter { letter, redriven }
            })
            .collect();
        letters.sort_by_key(|l| std::cmp::Reverse(l.letter.failed_at.clone()));
        letters.truncate(SHOWN);
        topics.push(TopicLetters { topic, dlq, total, letters });
    }
    Ok(Listing { topics })
}

/// Redrives what `request` names, once each, audited under `admin`.
pub async fn redrive(state: &State, admin: &str, request: RedriveRequest) -> Result<Outcome, ConsoleError> {
    if !request.confirm {
        return Err(ConsoleError::BadRequest(
            "a redrive puts dead letters back on their topic, where the services handle them again: \
             send \"confirm\": true to do it"
                .into(),
        ));
    }
    let targets: BTreeMap<String, String> =
        dlq::topics(&state.sources.prefix).into_iter().map(|(topic, dlq)| (dlq, topic)).collect();
    let wanted: Vec<LetterRef> = match (request.all, request.messages.is_empty()) {
        (true, true) => {
            let listing = list(state).await?;
            listing
                .topics
                .into_iter()
                .flat_map(|t| t.letters)
                .filter(|l| l.redriven.is_none())
                .map(|l| LetterRef { topic: l.letter.topic, partition: l.letter.partition, offset: l.letter.offset })
                .collect()
        }
        (false, false) => request.messages,
        (true, false) => {
            return Err(ConsoleError::BadRequest("give either \"all\": true or \"messages\", not both".into()));
        }
        (false, true) => {
            return Err(ConsoleError::BadRequest("nothing to redrive: give \"messages\" or \"all\": true".into()));
        }
    };
    let mut outcome = Outcome { redriven: Vec::new(), already: Vec::new() };
    for letter in wanted {
        let Some(target) = targets.get(&letter.topic) else {
            let known: Vec<&String> = targets.keys().collect();
            return Err(ConsoleError::BadRequest(format!(
                "{:?} is not a dead-letter topic of the saga; they are {known:?}",
                letter.topic
            )));
        };
        if redrive_one(state, admin, target, &letter).await? {
            outcome.redriven.push(letter);
        } else {
            outcome.already.push(letter);
        }
    }
    Ok(outcome)
}

/// Redrives one letter unless it was redriven before; true when it was sent now.
async fn redrive_one(state: &State, admin: &str, target: &str, letter: &LetterRef) -> Result<bool, ConsoleError> {
    let brokers = state.sources.brokers.clone();
    let at = letter.clone();
    let message = tokio::task::spawn_blocking(move || dlq::read_one(&brokers, &at.topic, at.partition, at.offset))
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))?
        .map_err(kafka)?;
    let described = DeadLetter::of(&message);
    let mut tx = state.audit.begin().await.map_err(unavailable("the redrive audit"))?;
    // Another redrive of the same letter waits here until this one commits, then finds it.
    let inserted = sqlx::query(
        "INSERT INTO redrive_audit (dlq_topic, dlq_partition, dlq_offset, target_topic, saga_key, event_type, admin) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(&letter.topic)
    .bind(letter.partition)
    .bind(letter.offset)
    .bind(target)
    .bind(&described.key)
    .bind(&described.event_type)
    .bind(admin)
    .execute(&mut *tx)
    .await
    .map_err(unavailable("the redrive audit"))?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    dlq::redrive(&state.producer, target, &letter.topic, &message).await.map_err(kafka)?;
    tx.commit().await.map_err(unavailable("the redrive audit"))?;
    tracing::info!(
        admin,
        dlq = %letter.topic,
        partition = letter.partition,
        offset = letter.offset,
        target,
        event_type = %described.event_type,
        saga_key = described.key.as_deref().unwrap_or("-"),
        "dead letter redriven"
    );
    Ok(true)
}

/// The newest redrives first.
pub async fn audit(pool: &PgPool) -> Result<Vec<AuditRow>, ConsoleError> {
    sqlx::query_as("SELECT * FROM redrive_audit ORDER BY redriven_at DESC LIMIT 200")
        .fetch_all(pool)
        .await
        .map_err(unavailable("the redrive audit"))
}
