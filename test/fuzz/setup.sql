-- test/fuzz/setup.sql: the scratch database of the fuzzer (test/fuzz/run
-- feeds it to "postgres --single -j", so statements end with ";" and an
-- empty line).  retl_fuzz_source has a column of each kind the JSON
-- builder treats apart, plus domains, an enum, a composite with a dropped
-- attribute, arrays, a dropped column and names that need escaping.
-- @MODULE@ is replaced with the path of retl_fuzz.so.

CREATE FUNCTION retl_fuzz(source regclass, args text[]) RETURNS int
	AS '@MODULE@', 'retl_fuzz' LANGUAGE C STRICT;

CREATE TYPE retl_fuzz_mood AS ENUM ('sad', 'ok', 'happy');

CREATE DOMAIN retl_fuzz_email AS text CHECK (VALUE LIKE '%@%');

CREATE DOMAIN retl_fuzz_posint AS int CHECK (VALUE > 0);

CREATE TYPE retl_fuzz_inner AS (n numeric, at timestamptz, tags text[]);

CREATE TYPE retl_fuzz_row AS (
	id int,
	gone text,
	"Name ""quoted""" text,
	inner_row retl_fuzz_inner,
	flags bool[],
	doc jsonb,
	raw bytea,
	mood retl_fuzz_mood
);

ALTER TYPE retl_fuzz_row DROP ATTRIBUTE gone;

CREATE DOMAIN retl_fuzz_rowdom AS retl_fuzz_row;

CREATE TABLE retl_fuzz_source (
	id int8 PRIMARY KEY,
	dropped_early text,
	user_id text,
	anon uuid,
	email retl_fuzz_email,
	age int2,
	score int4,
	qty retl_fuzz_posint,
	big int8,
	relid oid,
	ratio float4,
	amount float8,
	price numeric(12, 2),
	exact numeric,
	active bool,
	name varchar(40),
	code char(5),
	label name,
	created_at timestamptz,
	local_at timestamp,
	birthday date,
	alarm time,
	span interval,
	doc json,
	props jsonb,
	blob bytea,
	ints int4[],
	words text[],
	grid float8[],
	stamps timestamptz[],
	docs jsonb[],
	mood retl_fuzz_mood,
	moods retl_fuzz_mood[],
	addr inet,
	stay int4range,
	spot point,
	bits varbit,
	row_val retl_fuzz_row,
	rows_val retl_fuzz_row[],
	row_dom retl_fuzz_rowdom,
	"Weird ""col""\ é" text,
	"dotted.name" text,
	"xmin_at" int8
);

ALTER TABLE retl_fuzz_source DROP COLUMN dropped_early;
