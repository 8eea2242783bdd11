-- Users, credentials, balances, the ledger and per-order payments.

CREATE TABLE users (
    user_id      UUID        PRIMARY KEY,
    email        TEXT        NOT NULL,
    display_name TEXT        NOT NULL,
    role         TEXT        NOT NULL CHECK (role IN ('customer', 'admin')),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON users (lower(email));

-- argon2id PHC strings only; never a clear password.
CREATE TABLE credentials (
    user_id       UUID        PRIMARY KEY REFERENCES users (user_id),
    password_hash TEXT        NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE balances (
    user_id       UUID        PRIMARY KEY REFERENCES users (user_id),
    balance_minor BIGINT      NOT NULL CHECK (balance_minor >= 0),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every balance change is a row here: the balance is auditable as the sum of
-- the ledger. (kind, reference) is unique, so a credit, debit or refund with
-- the same reference (an order id, a top-up reference) happens once.
CREATE TABLE ledger (
    entry_id            UUID        PRIMARY KEY,
    user_id             UUID        NOT NULL REFERENCES users (user_id),
    kind                TEXT        NOT NULL CHECK (kind IN ('opening', 'credit', 'debit', 'refund')),
    amount_minor        BIGINT      NOT NULL CHECK (amount_minor <> 0),
    balance_after_minor BIGINT      NOT NULL CHECK (balance_after_minor >= 0),
    reference           TEXT        NOT NULL,
    order_id            UUID,
    at                  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT ledger_kind_reference UNIQUE (kind, reference)
);
CREATE INDEX ledger_of_user ON ledger (user_id, at);

-- The payment of each order the user service has seen: debited once,
-- refunded at most once; `cancelled` is a tombstone for an order cancelled
-- before its payment was asked for, so a late request debits nothing.
CREATE TABLE payments (
    order_id     UUID        PRIMARY KEY,
    user_id      UUID,
    amount_minor BIGINT      NOT NULL DEFAULT 0 CHECK (amount_minor >= 0),
    status       TEXT        NOT NULL CHECK (status IN ('debited', 'refunded', 'failed', 'cancelled')),
    reason       TEXT,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
