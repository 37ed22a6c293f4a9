# shellcheck shell=bash
# test/lib/setup.sh: shared by test/check and test/demo (source it).
#
# Installs the Debian packages retl needs when they are missing (as root),
# builds retl and installs it into PostgreSQL 15, and runs a script as the
# postgres OS user from a scratch copy of the repository (PostgreSQL
# refuses to run as root).

# RETL_PG_BIN picks another (for example relocated) PostgreSQL 15 installation
RETL_PG_BIN=${RETL_PG_BIN:-/usr/lib/postgresql/15/bin}
RETL_PG_CONFIG=$RETL_PG_BIN/pg_config
# (clang and libclang-rt-14-dev, with libFuzzer, build the fuzzer: test/fuzz)
RETL_PACKAGES="postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev
libipc-run-perl build-essential ca-certificates python3 curl postgresql-15-cron
iproute2 openssl clang libclang-rt-14-dev"

retl_log() { printf '== %s\n' "$*" >&2; }

retl_is_root() { [ "$(id -u)" -eq 0 ]; }

# Installs the packages of $RETL_PACKAGES that dpkg does not know as
# installed.  apt-get update runs once, only when something is missing.
retl_install_packages() {
	local missing="" p
	for p in $RETL_PACKAGES; do
		if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed'; then
			missing="$missing $p"
		fi
	done
	if [ -z "$missing" ]; then
		return 0
	fi
	if ! retl_is_root; then
		retl_log "missing Debian packages:$missing"
		retl_log "install them as root: apt-get install$missing"
		return 1
	fi
	retl_log "installing Debian packages:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq || return 1
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null || return 1
}

# Builds retl in $1 (the repository root) and installs it.
retl_build_install() {
	local root=$1
	retl_log "building retl"
	make -C "$root" -s PG_CONFIG="$RETL_PG_CONFIG" || return 1
	retl_log "installing retl"
	if retl_is_root; then
		make -C "$root" -s PG_CONFIG="$RETL_PG_CONFIG" install >/dev/null || return 1
	elif [ -w "$("$RETL_PG_CONFIG" --pkglibdir)" ]; then
		make -C "$root" -s PG_CONFIG="$RETL_PG_CONFIG" install >/dev/null || return 1
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		sudo -n make -C "$root" -s PG_CONFIG="$RETL_PG_CONFIG" install >/dev/null || return 1
	else
		retl_log "cannot write $("$RETL_PG_CONFIG" --pkglibdir): run as root to install retl"
		return 1
	fi
}

# Installs the npm packages of the tests (test/package.json, pinned by
# test/package-lock.json: kinesalite) into $1/node_modules when they are
# missing or older than the lock file.  Needs node and npm; without them it
# says so and returns 1 (the tests that need the packages then fail).
retl_install_test_npm() {
	local dir=$1
	[ -e "$dir/package-lock.json" ] || return 0
	if [ -e "$dir/node_modules/.package-lock.json" ] &&
		[ ! "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
		return 0
	fi
	if ! command -v npm >/dev/null && retl_is_root; then
		retl_log "installing Debian's nodejs and npm"
		export DEBIAN_FRONTEND=noninteractive
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm; } >/dev/null
	fi
	if ! command -v npm >/dev/null; then
		retl_log "npm is missing: cannot install the npm packages of $dir"
		return 1
	fi
	retl_log "installing the npm packages of $dir"
	npm ci --prefix "$dir" --no-audit --no-fund --ignore-scripts --update-notifier=false \
		--loglevel=error >&2
}

# Copies the repository $1 (without .git and build products) to $2/src.
retl_copy_tree() {
	local root=$1 scratch=$2
	mkdir -p "$scratch/src" || return 1
	tar -C "$root" --exclude=./.git --exclude='*.o' --exclude='*.so' \
		--exclude='*.bc' --exclude=./results --exclude=./tmp_check \
		-cf - . | tar -C "$scratch/src" -xf - || return 1
}

# The environment tests and the demo run with.
retl_runner_env() {
	export PATH="$RETL_PG_BIN:/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"
	export PG_CONFIG="$RETL_PG_CONFIG"
	unset PGDATA PGHOST PGPORT PGUSER PGDATABASE PGHOSTADDR PGSERVICE PGOPTIONS
}

# retl_run_as_postgres SCRATCH SCRIPT ARGS...: as root, makes SCRATCH
# postgres's own and runs "bash SCRIPT ARGS" as postgres with
# RETL_RUNNER=1; otherwise runs it as the current user.  Returns its status.
retl_run_as_postgres() {
	local scratch=$1
	shift
	if retl_is_root; then
		chown -R postgres:postgres "$scratch" || return 1
		runuser -u postgres -- env RETL_RUNNER=1 HOME="$scratch" \
			PATH="$RETL_PG_BIN:/usr/local/bin:/usr/bin:/bin" \
			bash "$@"
	else
		RETL_RUNNER=1 bash "$@"
	fi
}
