-- One row per COPY a writer committed, written in the same transaction as the rows. A writer
-- that lost its connection while committing retries with the same (writer, seq): if the first
-- attempt did commit, the primary key refuses the retry, so no flow is stored twice. The
-- collector deletes rows older than a day.
CREATE TABLE {schema}.nfpg_copies (
    writer       int8        NOT NULL,
    seq          int8        NOT NULL,
    rows         int8        NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (writer, seq)
);
