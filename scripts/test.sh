#!/usr/bin/env bash
# test.sh - build Herald and run every test against real servers, then print one closing line:
#     tests: N passed, N failed, N skipped
# It exits non-zero if the servers do not come up, the build fails, `dotnet test` fails, a test
# fails, or no test ran.
#
#   scripts/test.sh                      services up, build, test, summary (the CI entry point)
#   scripts/test.sh --summarize DIR      only print the summary of the .trx files in DIR
#
# Env:
#   HERALD_TEST_POSTGRES / _REDIS / _RABBITMQ / _NATS / _SQS   connection strings for the tests;
#                        each defaults to the server that scripts/services.sh starts
#   HERALD_KAFKA_BOOTSTRAP  a real Kafka cluster for the Kafka tests (default: librdkafka's mock
#                        cluster inside the test process; no server needed)
#   HERALD_TEST_TARGET   solution or project to build and test (default Herald.slnx)
#   HERALD_STATE         passed on to scripts/services.sh
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

# summarize_trx DIR: lists the skipped tests (with their reasons) and the failed tests (with the start of
# their messages and stack traces, so that a failure on CI can be read from its log) found in the
# .trx files of DIR, then sets PASSED FAILED SKIPPED. Counts come from each file's
# <ResultSummary><Counters .../> element (xunit's skips count in neither executed nor notExecuted,
# so skipped = total - passed - failed); names and reasons come from the <UnitTestResult> elements.
# Plain awk (mawk is enough), so that no python or xmllint is needed.
summarize_trx() {
  local dir=$1 files=() out
  shopt -s nullglob; files=("$dir"/*.trx); shopt -u nullglob
  PASSED=0 FAILED=0 SKIPPED=0 TRX_FILES=${#files[@]}
  [ ${#files[@]} -gt 0 ] || return 0
  out=$(awk '
    function attr(s, name,   m) {
      if (!match(s, name "=\"[^\"]*\"")) return ""
      m = substr(s, RSTART + length(name) + 2, RLENGTH - length(name) - 3)
      return m
    }
    function element(s, name,   a, b) {
      a = index(s, "<" name ">"); if (!a) return ""
      s = substr(s, a + length(name) + 2)
      b = index(s, "</" name ">"); if (!b) return ""
      return substr(s, 1, b - 1)
    }
    function unxml(s) {
      gsub(/&lt;/, "<", s); gsub(/&gt;/, ">", s); gsub(/&quot;/, "\"", s); gsub(/&apos;/, "\047", s)
      gsub(/&#xD;|&#13;|\r/, "", s); gsub(/&#xA;|&#10;/, "\n", s); gsub(/&amp;/, "\\&", s)
      sub(/^[ \t\n]+/, "", s); sub(/[ \t\n]+$/, "", s); gsub(/\n/, "\n      ", s)
      return s
    }
    function lines(s, most,   n, parts, i, r) { # the first most lines of s (a failure message or stack trace)
      n = split(s, parts, "\n"); r = parts[1]
      for (i = 2; i <= n && i <= most; i++) r = r "\n" parts[i]
      if (n > most) r = r "\n      ... (" n - most " more lines)"
      return r
    }
    BEGIN { RS = "<UnitTestResult " }
    {
      rec = $0
      if (FNR > 1) {
        tag = substr(rec, 1, index(rec, ">"))
        name = unxml(attr(tag, "testName")); outcome = attr(tag, "outcome")
        body = ""
        if (tag !~ /\/>$/) { e = index(rec, "</UnitTestResult>"); body = e ? substr(rec, 1, e - 1) : "" }
        if (outcome == "NotExecuted") {
          why = element(body, "Message"); if (why == "") why = element(body, "StdOut")
          why = unxml(why); if (why == "") why = "(no reason given)"
          skipped[++ns] = name ": " why
        } else if (outcome == "Failed" || outcome == "Error" || outcome == "Timeout" || outcome == "Aborted") {
          why = unxml(element(body, "Message")); where = unxml(element(body, "StackTrace"))
          failed[++nf] = name (why == "" ? "" : "\n      " lines(why, 20)) (where == "" ? "" : "\n      " lines(where, 12))
        }
      }
      if (match(rec, /<Counters [^>]*>/)) {
        c = substr(rec, RSTART, RLENGTH)
        t = attr(c, "total") + 0; p = attr(c, "passed") + 0
        f = attr(c, "failed") + attr(c, "error") + attr(c, "timeout") + attr(c, "aborted")
        T += t; P += p; F += f; S += (t - p - f > 0 ? t - p - f : 0)
      }
    }
    END {
      if (ns) { print "Skipped tests (" ns "):"; for (i = 1; i <= ns; i++) print "  " skipped[i] }
      if (nf) { print "Failed tests (" nf "):"; for (i = 1; i <= nf; i++) print "  " failed[i] }
      printf "@counts %d %d %d\n", P, F, S
    }' "${files[@]}") || { echo "could not read the .trx files in $dir" >&2; FAILED=1; return 1; }
  printf '%s\n' "$out" | sed '$d'
  read -r _ PASSED FAILED SKIPPED <<<"$(printf '%s\n' "$out" | tail -n 1)"
}

finish() { # PASSED FAILED SKIPPED EXIT
  echo "tests: $1 passed, $2 failed, $3 skipped"
  exit "$4"
}

if [ "${1:-}" = --summarize ]; then
  [ -d "${2:-}" ] || { echo "usage: scripts/test.sh --summarize DIR" >&2; exit 2; }
  summarize_trx "$2"
  rc=0; { [ "$FAILED" -gt 0 ] || [ $((PASSED + FAILED)) -eq 0 ]; } && rc=1
  finish "$PASSED" "$FAILED" "$SKIPPED" $rc
fi

TARGET="${HERALD_TEST_TARGET:-Herald.slnx}"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

echo "== services"
if ! bash scripts/services.sh up; then
  echo "ERROR: scripts/services.sh up failed: the tests need their servers (see the messages above)" >&2
  finish 0 1 0 1
fi

: "${HERALD_TEST_POSTGRES:=Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald}"
: "${HERALD_TEST_REDIS:=127.0.0.1:6379}"
: "${HERALD_TEST_RABBITMQ:=amqp://guest:guest@127.0.0.1:5672/}"
: "${HERALD_TEST_NATS:=nats://127.0.0.1:4222}"
: "${HERALD_TEST_SQS:=http://127.0.0.1:9324}"
export HERALD_TEST_POSTGRES HERALD_TEST_REDIS HERALD_TEST_RABBITMQ HERALD_TEST_NATS HERALD_TEST_SQS

if ! command -v dotnet >/dev/null; then
  echo "ERROR: dotnet is not on PATH (the .NET 10 SDK is needed)" >&2
  finish 0 1 0 1
fi

echo "== dotnet build $TARGET -c Release"
dotnet build "$TARGET" -c Release
rc=$?
if [ $rc -ne 0 ]; then
  echo "ERROR: build failed (dotnet build exited with $rc)" >&2
  finish 0 1 0 1
fi

RESULTS=$(mktemp -d "${TMPDIR:-/tmp}/herald-test-results.XXXXXX") || finish 0 1 0 1
echo "== dotnet test $TARGET -c Release (results in $RESULTS)"
# A test that hangs (a wait without a deadline) ends its project's run after 15 minutes, naming the test in the log
# ("The test running when the crash occurred"), instead of holding the whole run until CI's limit.
dotnet test "$TARGET" -c Release --no-build --logger "trx" --logger "console;verbosity=normal" --results-directory "$RESULTS" \
  --blame-hang-timeout 15m --blame-hang-dump-type none
test_rc=$?

echo "== summary"
summarize_trx "$RESULTS"
rc=0
if [ "$TRX_FILES" -eq 0 ]; then
  echo "ERROR: no .trx file in $RESULTS" >&2; rc=1
fi
if [ $test_rc -ne 0 ]; then
  echo "ERROR: dotnet test exited with $test_rc" >&2; rc=1
  if [ "$FAILED" -eq 0 ]; then
    echo "ERROR: ... yet no failed test is recorded (crashed test host or missing results): counted as 1 failure" >&2
    FAILED=1
  fi
fi
if [ "$FAILED" -gt 0 ]; then rc=1; fi
if [ $((PASSED + FAILED)) -eq 0 ]; then echo "ERROR: no test ran" >&2; rc=1; fi
finish "$PASSED" "$FAILED" "$SKIPPED" $rc
