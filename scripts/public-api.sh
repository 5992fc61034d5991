#!/usr/bin/env bash
# public-api.sh - declares every package's current public surface: builds each src project and adds the symbols the
# PublicAPI analyzer reports as undeclared (RS0016) to its PublicAPI.Unshipped.txt, and drops the ones it reports as
# no longer there (RS0017). Review the diff: every line it adds is a promise to users.
#
#   scripts/public-api.sh            all packages under src/
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

for project in src/Herald/Herald.csproj $(ls src/*/*.csproj | grep -v "^src/Herald/Herald.csproj$"); do
  dir=$(dirname "$project")
  [ -f "$dir/PublicAPI.Unshipped.txt" ] || printf '#nullable enable\n' > "$dir/PublicAPI.Unshipped.txt"
  [ -f "$dir/PublicAPI.Shipped.txt" ] || printf '#nullable enable\n' > "$dir/PublicAPI.Shipped.txt"
  for _ in 1 2 3; do
    out=$(dotnet build "$project" -c Debug 2>&1)
    added=$(printf '%s\n' "$out" | grep "error RS0016" | grep -F "[$PWD/$project]" | sed -n "s/.*Symbol '\(.*\)' is not part of the declared public API.*/\1/p" | sort -u)
    removed=$(printf '%s\n' "$out" | grep "error RS0017" | grep -F "[$PWD/$project]" | sed -n "s/.*Symbol '\(.*\)' is part of the declared API, but.*/\1/p" | sort -u)
    [ -z "$added" ] && [ -z "$removed" ] && break
    {
      printf '#nullable enable\n'
      { grep -v '^#nullable enable$' "$dir/PublicAPI.Unshipped.txt"; [ -n "$added" ] && printf '%s\n' "$added"; } |
        grep -vxF -f <(printf '%s\n' "${removed:-\$none\$}") | LC_ALL=C sort -u
    } > "$dir/PublicAPI.Unshipped.txt.new"
    mv "$dir/PublicAPI.Unshipped.txt.new" "$dir/PublicAPI.Unshipped.txt"
  done
  echo "$project: $(grep -vc '^#nullable enable$' "$dir/PublicAPI.Unshipped.txt") unshipped symbols"
done
