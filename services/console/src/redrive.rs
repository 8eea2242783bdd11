//! The dead-letter view and its redrive. A redrive puts a dead letter back on the topic it
//! came from, once: the audit row (who, when, which message) is written in the same
//! transaction that waits for the broker's acknowledgement, and its key is the dead letter's
//! position, so asking twice (or two admins at once) redrives it once. Should the commit be
//! lost after the broker took the message, a second redrive sends a copy that the
//! consumers' inbox drops.
//!
//! What goes back is the record the source topic really holds at the letter's original
//! position, never the letter's own bytes: every letter is checked first
//! ([`saga_operator::dlq::check`]), and a forged or unverifiable one is refused unless an
//! admin overrides that one letter, naming the digest of its value and a reason, both
//! audited.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use saga_operator::dlq::{self, Checked, DeadLetter, DlqError, Provenance, Verdict};
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
    /// Whether the source topic holds this very record: only then does a redrive go
    /// through without an override.
    pub provenance: Provenance,
    /// SHA-256 of the letter's value: what an override names.
    pub value_sha256: String,
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

impl LetterRef {
    fn of(m: &OwnedMessage) -> LetterRef {
        LetterRef { topic: m.topic().to_owned(), partition: m.partition(), offset: m.offset() }
    }
}

/// `{"confirm": true, "messages": [{"topic": "order-events.dlq", "partition": 0, "offset": 3}]}`,
/// `{"confirm": true, "all": true}` for every dead letter not redriven yet, oldest first,
/// or `{"confirm": true, "override": {...}}` to send one forged or unverifiable letter's
/// own bytes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    #[serde(default)]
    pub confirm: bool,
    #[serde(default)]
    pub messages: Vec<LetterRef>,
    #[serde(default)]
    pub all: bool,
    #[serde(default, rename = "override")]
    pub override_one: Option<Override>,
}

/// An admin's decision to redrive one letter whose source record could not be found as it
/// is: its own bytes go out, audited with their digest and the reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The SHA-256 of the letter's value as listed: the override is for exactly these bytes.
    pub value_sha256: String,
    /// Why, in the admin's words (audited).
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    /// Put back on their topic by this request.
    pub redriven: Vec<LetterRef>,
    /// Redriven before (by this admin or another): nothing sent again.
    pub already: Vec<LetterRef>,
    /// Not sent: the source topic does not hold them as they are.
    pub refused: Vec<Refused>,
}

#[derive(Debug, Serialize)]
pub struct Refused {
    #[serde(flatten)]
    pub letter: LetterRef,
    pub provenance: Provenance,
    pub value_sha256: String,
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
    /// `genuine`, or the verdict an admin overrode.
    pub provenance: String,
    pub value_sha256: Option<String>,
    pub override_reason: Option<String>,
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

/// Runs blocking Kafka work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DlqError> + Send + 'static,
) -> Result<T, ConsoleError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ConsoleError::Unavailable(e.to_string()))?.map_err(kafka)
}

/// Every letter of DLQ topic `dlq`.
async fn read_all(state: &State, dlq: &str) -> Result<Vec<OwnedMessage>, ConsoleError> {
    let (brokers, dlq) = (state.sources.brokers.clone(), dlq.to_owned());
    blocking(move || dlq::read(&brokers, &dlq, None)).await
}

async fn check(state: &State, letters: Vec<OwnedMessage>) -> Result<Vec<Checked>, ConsoleError> {
    let (brokers, prefix) = (state.sources.brokers.clone(), state.sources.prefix.clone());
    blocking(move || dlq::check(&brokers, &prefix, letters)).await
}

async fn redriven(state: &State) -> Result<BTreeMap<LetterRef, Redriven>, ConsoleError> {
    let rows: Vec<(String, i32, i64, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT dlq_topic, dlq_partition, dlq_offset, admin, redriven_at FROM redrive_audit")
            .fetch_all(&state.audit)
            .await
            .map_err(unavailable("the redrive audit"))?;
    Ok(rows
        .into_iter()
        .map(|(topic, partition, offset, by, at)| (LetterRef { topic, partition, offset }, Redriven { by, at }))
        .collect())
}

/// Every DLQ topic with its newest letters, each checked against its source topic and
/// marked when it was redriven.
pub async fn list(state: &State) -> Result<Listing, ConsoleError> {
    let mut by_letter = redriven(state).await?;
    let mut topics = Vec::new();
    for (topic, dlq) in dlq::topics(&state.sources.prefix) {
        let mut messages = read_all(state, &dlq).await?;
        let total = messages.len();
        messages.sort_by_key(|m| std::cmp::Reverse(DeadLetter::of(m).failed_at));
        messages.truncate(SHOWN);
        let letters = check(state, messages)
            .await?
            .into_iter()
            .map(|checked| {
                let redriven = by_letter.remove(&LetterRef::of(&checked.letter));
                Letter {
                    letter: DeadLetter::of(&checked.letter),
                    value_sha256: dlq::value_digest(&checked.letter),
                    provenance: checked.provenance,
                    redriven,
                }
            })
            .collect();
        topics.push(TopicLetters { topic, dlq, total, letters });
    }
    Ok(Listing { topics })
}

/// Redrives what `request` names, once each, audited under `admin`: genuine letters only,
/// unless the request overrides one letter.
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
    let target_of = |letter: &LetterRef| {
        targets.get(&letter.topic).cloned().ok_or_else(|| {
            let known: Vec<&String> = targets.keys().collect();
            ConsoleError::BadRequest(format!(
                "{:?} is not a dead-letter topic of the saga; they are {known:?}",
                letter.topic
            ))
        })
    };
    let read_one = |letter: LetterRef| {
        let brokers = state.sources.brokers.clone();
        blocking(move || dlq::read_one(&brokers, &letter.topic, letter.partition, letter.offset))
    };
    let (letters, override_one) = match (request.all, request.messages.is_empty(), request.override_one) {
        (true, true, None) => {
            // Every letter of every DLQ topic, not only those a listing shows.
            let done: BTreeSet<LetterRef> = redriven(state).await?.into_keys().collect();
            let mut letters = Vec::new();
            for dlq in targets.keys() {
                letters.extend(read_all(state, dlq).await?.into_iter().filter(|m| !done.contains(&LetterRef::of(m))));
            }
            (dlq::oldest_first(letters), None)
        }
        (false, false, None) => {
            let mut letters = Vec::new();
            for letter in request.messages {
                target_of(&letter)?;
                letters.push(read_one(letter).await?);
            }
            (letters, None)
        }
        (false, true, Some(chosen)) => {
            if chosen.reason.trim().is_empty() {
                return Err(ConsoleError::BadRequest(
                    "an override sends bytes its source topic does not hold: give the \"reason\" it is right".into(),
                ));
            }
            let at = LetterRef { topic: chosen.topic.clone(), partition: chosen.partition, offset: chosen.offset };
            target_of(&at)?;
            let letter = read_one(at.clone()).await?;
            let digest = dlq::value_digest(&letter);
            if !digest.eq_ignore_ascii_case(chosen.value_sha256.trim()) {
                return Err(ConsoleError::BadRequest(format!(
                    "the letter at {}/{}@{} has value SHA-256 {digest}, not {}: list it again and override what \
                     is there",
                    at.topic, at.partition, at.offset, chosen.value_sha256
                )));
            }
            (vec![letter], Some(chosen.reason.trim().to_owned()))
        }
        (false, true, None) => {
            return Err(ConsoleError::BadRequest(
                "nothing to redrive: give \"messages\", \"all\": true or one \"override\"".into(),
            ));
        }
        _ => {
            return Err(ConsoleError::BadRequest(
                "give one of \"all\": true, \"messages\" or \"override\", not several".into(),
            ));
        }
    };
    let mut outcome = Outcome { redriven: Vec::new(), already: Vec::new(), refused: Vec::new() };
    for checked in check(state, letters).await? {
        let at = LetterRef::of(&checked.letter);
        let target = target_of(&at)?;
        let reason = match (checked.provenance.verdict, &override_one) {
            (Verdict::Genuine, _) => None,
            (_, Some(reason)) => Some(reason.as_str()),
            (_, None) => {
                tracing::warn!(
                    admin,
                    dlq = %at.topic,
                    partition = at.partition,
                    offset = at.offset,
                    verdict = checked.provenance.verdict.as_str(),
                    why = %checked.provenance.why,
                    "dead letter refused: its source topic does not hold it"
                );
                outcome.refused.push(Refused {
                    value_sha256: dlq::value_digest(&checked.letter),
                    provenance: checked.provenance,
                    letter: at,
                });
                continue;
            }
        };
        if redrive_one(state, admin, &target, &checked, reason).await? {
            outcome.redriven.push(at);
        } else {
            outcome.already.push(at);
        }
    }
    Ok(outcome)
}

/// Redrives one checked letter unless it was redriven before; true when it was sent now.
/// A genuine letter sends its source record; an overridden one (with `reason`) its own bytes.
async fn redrive_one(
    state: &State,
    admin: &str,
    target: &str,
    checked: &Checked,
    reason: Option<&str>,
) -> Result<bool, ConsoleError> {
    let letter = &checked.letter;
    let record = match (&checked.source, reason) {
        (Some(source), _) => source,
        (None, Some(_)) => letter,
        (None, None) => return Err(ConsoleError::Unavailable("a letter without its source record".into())),
    };
    let described = DeadLetter::of(letter);
    let digest = dlq::value_digest(letter);
    let mut tx = state.audit.begin().await.map_err(unavailable("the redrive audit"))?;
    // Another redrive of the same letter waits here until this one commits, then finds it.
    let inserted = sqlx::query(
        "INSERT INTO redrive_audit (dlq_topic, dlq_partition, dlq_offset, target_topic, saga_key, event_type, admin, \
         provenance, value_sha256, override_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT DO NOTHING",
    )
    .bind(letter.topic())
    .bind(letter.partition())
    .bind(letter.offset())
    .bind(target)
    .bind(&described.key)
    .bind(&described.event_type)
    .bind(admin)
    .bind(checked.provenance.verdict.as_str())
    .bind(&digest)
    .bind(reason)
    .execute(&mut *tx)
    .await
    .map_err(unavailable("the redrive audit"))?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    dlq::redrive(&state.producer, target, letter.topic(), letter, record).await.map_err(kafka)?;
    tx.commit().await.map_err(unavailable("the redrive audit"))?;
    tracing::info!(
        admin,
        dlq = %letter.topic(),
        partition = letter.partition(),
        offset = letter.offset(),
        target,
        event_type = %described.event_type,
        saga_key = described.key.as_deref().unwrap_or("-"),
        provenance = checked.provenance.verdict.as_str(),
        value_sha256 = %digest,
        override_reason = reason.unwrap_or("-"),
        "dead letter redriven"
    );
    Ok(true)
}

/// The newest redrives first, of one saga (by its key) or of all.
pub async fn audit(pool: &PgPool, saga_key: Option<&str>) -> Result<Vec<AuditRow>, ConsoleError> {
    sqlx::query_as(
        "SELECT * FROM redrive_audit WHERE $1::text IS NULL OR saga_key = $1 ORDER BY redriven_at DESC LIMIT 200",
    )
    .bind(saga_key)
    .fetch_all(pool)
    .await
    .map_err(unavailable("the redrive audit"))
}
