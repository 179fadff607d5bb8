-- Apps built from a source: what was asked for (branch, commit), what was fetched
-- (source_commit, snapshot folder), build args, and the image name their inputs hash to.
ALTER TABLE apps ADD COLUMN git_branch TEXT;
ALTER TABLE apps ADD COLUMN git_commit TEXT;
ALTER TABLE apps ADD COLUMN source_commit TEXT;
ALTER TABLE apps ADD COLUMN snapshot TEXT;
ALTER TABLE apps ADD COLUMN build_args TEXT NOT NULL DEFAULT '{}';
ALTER TABLE apps ADD COLUMN image TEXT;
