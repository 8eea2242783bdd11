//! What `cargo xtask new service` writes compiles against the generated crate: `cargo xtask
//! gen` keeps the handler file it writes for the spec's first participant in
//! `scaffold_participant.rs` (`gen --check` fails when it is stale), and this binary
//! compiles it, so a scaffold whose methods or types drift from the handler trait fails
//! the build of the test suite.

use saga_contract::{Classify, Dispatch, FailureClass};
use saga_generated::topology::PRODUCT_SERVICE;

use super::scaffold_participant::{ProductError, ProductSaga};

/// What the service chassis (`saga_runtime::service::run`) asks of a service's handler.
fn runs_on_the_chassis<E: Dispatch<H, Ctx = sqlx::PgConnection>, H>(_: &saga_contract::ServiceIdentity<E>, _: &H) {}

#[test]
fn the_scaffold_of_a_participant_is_a_handler_the_chassis_runs() {
    runs_on_the_chassis(&PRODUCT_SERVICE, &ProductSaga);
    assert_eq!(ProductError::Refused("no such product".into()).class(), FailureClass::Permanent);
    assert_eq!(ProductError::Db(sqlx::Error::PoolTimedOut).class(), FailureClass::Infrastructure);
}
