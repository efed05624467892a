-- The warehouse tables of the omnicc export, schema version 1 (docs/EXPORT.md).
-- Load with: omniccd -c FILE export --format csv --table events > events.csv (and facts),
-- then \copy omnicc_events FROM 'events.csv' WITH (FORMAT csv, HEADER true).
CREATE TABLE IF NOT EXISTS omnicc_events (
  id             text PRIMARY KEY,   -- export stream id "<ms>-<seq>": the resume cursor
  at_ms          bigint NOT NULL,    -- when it happened (ms since the epoch, UTC)
  kind           text NOT NULL,      -- case_event | fact
  case_id        text,
  type           text,               -- case events: case.opened, offer.accepted, ...
  interaction_id text,
  agent          text,
  doc            jsonb NOT NULL      -- the whole NDJSON line
);
CREATE TABLE IF NOT EXISTS omnicc_facts (
  id              text PRIMARY KEY REFERENCES omnicc_events (id) DEFERRABLE INITIALLY DEFERRED,
  at_ms           bigint NOT NULL,
  hour_start      timestamptz NOT NULL, -- the UTC hour the interaction arrived in
  case_id         text,
  interaction_id  text NOT NULL,
  channel         text NOT NULL,
  queue           text NOT NULL,
  segment         text NOT NULL,        -- the customer's segment when the contact arrived
  branch          text NOT NULL,        -- '-' when none
  agent           text NOT NULL,        -- '-' when none
  offered         bigint NOT NULL,
  answered        bigint NOT NULL,
  abandoned       bigint NOT NULL,
  answered_in_sla bigint NOT NULL,
  wait_ms         bigint NOT NULL,
  handled         bigint NOT NULL,
  handle_ms       bigint NOT NULL,
  wrap_ms         bigint NOT NULL,
  transfers       bigint NOT NULL,
  timed_out       bigint NOT NULL,
  new_cases       bigint NOT NULL,
  repeat_cases    bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS omnicc_facts_hour ON omnicc_facts (hour_start);
