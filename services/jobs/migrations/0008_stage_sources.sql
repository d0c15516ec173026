-- Deletion (issue 15): the jobs made from one source (stage 0's input key, inputs/<sha256>),
-- of every tenant, to tell which outputs of a deleted job another job still uses.
CREATE INDEX stages_source_idx ON jobs.stages (input_key) WHERE idx = 0;
