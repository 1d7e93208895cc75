-- Exactly-once for spooled COPYs that PostgreSQL refused in part: replay splits such a COPY
-- into row ranges, each committed with its own marker (writer, seq, part). part = 0 is the
-- whole COPY; a range [first, end) is (first + 1) << 32 | end, so it is never 0. A replay
-- after a crash meets the markers of the ranges already committed and skips them.
ALTER TABLE {schema}.nfpg_copies ADD COLUMN part int8 NOT NULL DEFAULT 0;
ALTER TABLE {schema}.nfpg_copies DROP CONSTRAINT nfpg_copies_pkey;
ALTER TABLE {schema}.nfpg_copies ADD CONSTRAINT nfpg_copies_pkey PRIMARY KEY (writer, seq, part);
