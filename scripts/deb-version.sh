#!/bin/sh
# deb-version.sh DESCRIBE: a Debian version from `git describe --tags
# --always --dirty` output. v1.2.3 -> 1.2.3; v1.2.3-4-gabc1234-dirty ->
# 1.2.3+4+gabc1234+dirty (sorts after 1.2.3, before 1.2.4). With no tag
# yet (describe is a bare hash): 0~gitYYYYMMDD+abc1234, dated by the
# commit, so later commits sort later and any tagged release sorts above.
set -eu
if echo "$1" | grep -Eq '^[0-9a-f]{7,40}(-dirty)?$'; then
	echo "0~git$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || echo 0)+$1" | tr - +
else
	echo "${1#v}" | tr - +
fi
