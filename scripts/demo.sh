#!/usr/bin/env bash
# flowpin demo: a dual-WAN NAT router in network namespaces.
#
#   lan --- router ==wan1== isp1 --+
#                  ==wan2== isp2 --+-- far (203.0.113.10 and 2001:db8:ff::10,
#                                       the "Internet")
#
# Dual stack: the LAN is 10.77.0.0/24 and the ULA fd00:77::/64; each ISP
# gives the router one IPv4 address and one IPv6 /64 and drops anything
# else from it (BCP38).
#
# Usage (as root): scripts/demo.sh /path/to/flowpin
# Everything lives in namespaces named fpdemo-*, deleted on exit; the host's
# routes, rules, nftables and sysctls are never touched, and no packet leaves
# these namespaces. Needs: iproute2, nftables (nft), perl-base (Essential in
# Debian; its IO::Socket::IP is the far end's TCP listener). With socat,
# the daemon's status page is forwarded to http://127.0.0.1:$DEMO_PORT/ on
# this host (a localhost listener, nothing else) and kept up for
# $DEMO_HOLD seconds (default 30; 0 skips the wait and the forwarding).
set -euo pipefail

BIN=${1:?usage: $0 /path/to/flowpin}
BIN=$(realpath "$BIN")
# TUNPAIR: the point-to-point link helper (integration/tunpair); built
# here with go when not given.
TUNPAIR=${TUNPAIR:-}
[[ $(id -u) == 0 ]] || { echo "demo.sh: must run as root" >&2; exit 1; }
for tool in ip nft perl timeout; do
	command -v "$tool" >/dev/null || { echo "demo.sh: $tool not found (apt-get install iproute2 nftables perl-base)" >&2; exit 1; }
done

# DEMO_NS: the namespaces' prefix (a test running the demo beside another
# demo gives its own).
P=${DEMO_NS:-fpdemo}
LAN=$P-lan ROUTER=$P-router ISP1=$P-isp1 ISP2=$P-isp2 FAR=$P-far
ALL=("$LAN" "$ROUTER" "$ISP1" "$ISP2" "$FAR")
SERVICE=203.0.113.10 SERVICE6=2001:db8:ff::10 PORT=5201
DEMO_PORT=${DEMO_PORT:-9108} DEMO_HOLD=${DEMO_HOLD:-30}
WORK=$(mktemp -d)
LISTENER_PID=
DAEMON=
FORWARDER=
SESSION=

cleanup() {
	set +e
	[[ -n $FORWARDER ]] && kill "$FORWARDER" 2>/dev/null && wait "$FORWARDER" 2>/dev/null
	[[ -n $DAEMON ]] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
	[[ -n $SESSION ]] && kill "$SESSION" 2>/dev/null && wait "$SESSION" 2>/dev/null
	# shellcheck disable=SC2086 # a list of pids
	[[ -n $LISTENER_PID ]] && kill $LISTENER_PID 2>/dev/null && wait $LISTENER_PID 2>/dev/null
	for ns in "${ALL[@]}"; do
		# flowpin's files for the namespace in /run/flowpin (a daemon's
		# socket and locks): one killed with -KILL (the HA section's fw-a)
		# could not remove them. They are named after the namespace's
		# identity, net-DEV-INODE with DEV in hex, which the next namespace
		# made may get once this one is gone: removed while it is still
		# this one's.
		local dev ino
		if read -r dev ino < <(stat -c '%d %i' "/run/netns/$ns" 2>/dev/null); then
			rm -f "/run/flowpin/net-$(printf %x "$dev")-$ino".*
		fi
		ip netns del "$ns" 2>/dev/null
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z $TUNPAIR ]]; then
	command -v go >/dev/null || { echo "demo.sh: go not found (it builds integration/tunpair; or set TUNPAIR)" >&2; exit 1; }
	TUNPAIR=$WORK/tunpair
	go -C "$(dirname "$(realpath "$0")")/.." build -o "$TUNPAIR" ./integration/tunpair
fi

for ns in "${ALL[@]}"; do
	if ip netns list | grep -qw "^$ns"; then
		echo "demo.sh: namespace $ns already exists (another demo running?)" >&2
		ALL=() # not ours: do not delete it
		exit 1
	fi
done

heading() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# veth NS_A IF_A NS_B IF_B: a cable, both ends created inside their namespaces.
veth() {
	ip -n "$1" link add name "$2" type veth peer name "$4" netns "$3"
	ip -n "$1" link set dev "$2" up
	ip -n "$3" link set dev "$4" up
}

heading "Building the sandbox (namespaces $P-*)"
for ns in "${ALL[@]}"; do
	ip netns add "$ns"
	ip -n "$ns" link set dev lo up
	# keep_addr_on_down: an interface taken down and up (below) keeps its
	# IPv6 addresses, as it keeps its IPv4 ones.
	nsx "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 net.ipv6.conf.all.keep_addr_on_down=1
done
veth "$LAN" eth0 "$ROUTER" lan
veth "$ROUTER" wan1 "$ISP1" cust
veth "$ROUTER" wan2 "$ISP2" cust
veth "$ISP1" core "$FAR" isp1
veth "$ISP2" core "$FAR" isp2

ip -n "$LAN" addr add 10.77.0.2/24 dev eth0
ip -n "$LAN" route add default via 10.77.0.1
ip -n "$LAN" addr add fd00:77::2/64 dev eth0 nodad
ip -n "$LAN" -6 route add default via fd00:77::1

ip -n "$ROUTER" addr add 10.77.0.1/24 dev lan
ip -n "$ROUTER" addr add 192.0.2.2/24 dev wan1
ip -n "$ROUTER" addr add 198.51.100.2/24 dev wan2
ip -n "$ROUTER" addr add fd00:77::1/64 dev lan nodad
ip -n "$ROUTER" addr add 2001:db8:1::2/64 dev wan1 nodad
ip -n "$ROUTER" addr add 2001:db8:2::2/64 dev wan2 nodad
nsx "$ROUTER" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
ip -n "$ROUTER" route add default via 192.0.2.1 dev wan1 # the box before flowpin
ip -n "$ROUTER" -6 route add default via 2001:db8:1::1 dev wan1

# isp CUST_CIDR CORE_CIDR FAR_ADDR CUSTOMER OTHER_PREFIX N: ISP N, in both
# families (IPv6: 2001:db8:N::/64 to the customer, 2001:db8:100:N::/64 to far).
isp() {
	local ns=$1 n=$7
	ip -n "$ns" addr add "$2" dev cust
	ip -n "$ns" addr add "$3" dev core
	ip -n "$ns" addr add "2001:db8:$n::1/64" dev cust nodad
	ip -n "$ns" addr add "2001:db8:100:$n::1/64" dev core nodad
	nsx "$ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
	ip -n "$ns" route add 203.0.113.0/24 via "$4"
	ip -n "$ns" route add "$6" via "$4"
	ip -n "$ns" -6 route add 2001:db8:ff::/64 via "2001:db8:100:$n::2"
	ip -n "$ns" -6 route add "2001:db8:$((3 - n))::/64" via "2001:db8:100:$n::2"
	# BCP38: the ISP drops anything from its customer not sourced from the
	# customer's own address (and, for IPv6, its link-local one, which
	# neighbour discovery uses).
	nsx "$ns" nft -f - <<-EOF
		table netdev bcp38 {
			chain in {
				type filter hook ingress device "cust" priority 0;
				ip saddr != $5 drop
				ip6 saddr != { 2001:db8:$n::2, fe80::/10 } drop
			}
		}
	EOF
}
isp "$ISP1" 192.0.2.1/24 100.64.1.1/30 100.64.1.2 192.0.2.2 198.51.100.0/24 1
isp "$ISP2" 198.51.100.1/24 100.64.2.1/30 100.64.2.2 198.51.100.2 192.0.2.0/24 2

ip -n "$FAR" addr add 100.64.1.2/30 dev isp1
ip -n "$FAR" addr add 100.64.2.2/30 dev isp2
ip -n "$FAR" addr add $SERVICE/32 dev lo
nsx "$FAR" sysctl -qw net.ipv4.ip_forward=1
ip -n "$FAR" route add 192.0.2.0/24 via 100.64.1.1 src $SERVICE
ip -n "$FAR" route add 198.51.100.0/24 via 100.64.2.1 src $SERVICE
ip -n "$FAR" addr add 2001:db8:100:1::2/64 dev isp1 nodad
ip -n "$FAR" addr add 2001:db8:100:2::2/64 dev isp2 nodad
ip -n "$FAR" addr add $SERVICE6/128 dev lo
nsx "$FAR" sysctl -qw net.ipv6.conf.all.forwarding=1
ip -n "$FAR" -6 route add 2001:db8:1::/64 via 2001:db8:100:1::1 src $SERVICE6
ip -n "$FAR" -6 route add 2001:db8:2::/64 via 2001:db8:100:2::1 src $SERVICE6
# Count new connections at the far end by the (NATed) source = the link used.
nsx "$FAR" nft -f - <<-EOF
	table ip demo {
		counter via_isp1 {}
		counter via_isp2 {}
		counter via_isp2_session2 {}
		counter other {}
		chain in {
			type filter hook input priority 0;
			# one count per connection: a retransmitted SYN is new too;
			# and only a SYN opens one: a late FIN or ACK of a closed
			# connection, which conntrack picks up as new, is none
			tcp dport $PORT ct mark 0x1 return
			tcp dport $PORT tcp flags & (syn | ack) != syn return
			tcp dport $PORT ct state new ip saddr 192.0.2.2 counter name "via_isp1" ct mark set 0x1
			tcp dport $PORT ct state new ip saddr 198.51.100.2 counter name "via_isp2" ct mark set 0x1
			tcp dport $PORT ct state new ip saddr 198.51.100.7 counter name "via_isp2_session2" ct mark set 0x1
			tcp dport $PORT ct state new ip saddr != { 192.0.2.2, 198.51.100.2, 198.51.100.7 } counter name "other" ct mark set 0x1
		}
	}
	table ip6 demo {
		counter via_isp1 {}
		counter via_isp2 {}
		counter other {}
		chain in {
			type filter hook input priority 0;
			# one count per connection: a retransmitted SYN is new too;
			# and only a SYN opens one
			tcp dport $PORT ct mark 0x1 return
			tcp dport $PORT tcp flags & (syn | ack) != syn return
			tcp dport $PORT ct state new ip6 saddr 2001:db8:1::2 counter name "via_isp1" ct mark set 0x1
			tcp dport $PORT ct state new ip6 saddr 2001:db8:2::2 counter name "via_isp2" ct mark set 0x1
			tcp dport $PORT ct state new ip6 saddr != { 2001:db8:1::2, 2001:db8:2::2 } counter name "other" ct mark set 0x1
		}
	}
EOF
# The far end's TCP listener: accept and close. A listener that stays open
# (iperf3 -s closes and reopens its socket between "tests", refusing the
# connections that arrive in between). Stops by itself after 300 s at most.
# One listener per family; they stop by themselves after 600 s at most.
listen() {
	ip netns exec "$FAR" timeout 600 perl -MIO::Socket::IP -e '
		my $s = IO::Socket::IP->new(LocalHost => $ARGV[0], LocalPort => $ARGV[1],
			Listen => 1024, ReuseAddr => 1) or die "listen: $!\n";
		while (1) { my $c = $s->accept or next; close $c }' "$1" $PORT &
	LISTENER_PID+=" $!"
	for _ in $(seq 50); do
		nsx "$FAR" bash -c "exec 3<>/dev/tcp/$1/$PORT" 2>/dev/null && break
		sleep 0.1
	done
}
listen $SERVICE
listen $SERVICE6
nsx "$FAR" nft reset counters table ip demo >/dev/null
nsx "$FAR" nft reset counters table ip6 demo >/dev/null
echo "lan 10.77.0.2 -> router (lan 10.77.0.1, wan1 192.0.2.2, wan2 198.51.100.2)"
echo "isp1 gw 192.0.2.1, isp2 gw 198.51.100.1 (both enforce BCP38) -> far $SERVICE:$PORT"
echo "IPv6: lan fd00:77::2 -> router (wan1 2001:db8:1::2, wan2 2001:db8:2::2) -> far [$SERVICE6]:$PORT"

count() { nsx "$FAR" nft list counter "$1" demo "$2" | awk '/packets/ { print $2 }'; }

# traffic N [FAMILY [NS]]: N short TCP connections from NS (default lan) to
# far, over IPv4 (ip) or IPv6 (ip6): 20 at a time, 1 s timeout each, so a
# broken setup cannot stall the demo; then the per-link counts at far.
traffic() {
	local n=$1 fam=${2:-ip} from=${3:-$LAN} dst=$SERVICE ok i pids=() a1=192.0.2.2 a2=198.51.100.2
	[[ $fam == ip6 ]] && dst=$SERVICE6 a1=2001:db8:1::2 a2=2001:db8:2::2
	nsx "$FAR" nft reset counters table "$fam" demo >/dev/null
	: >"$WORK/ok"
	for ((i = 1; i <= n; i++)); do
		{ nsx "$from" timeout 1 bash -c "exec 3<>/dev/tcp/$dst/$PORT" 2>/dev/null && echo ok >>"$WORK/ok"; } &
		pids+=($!)
		if ((i % 20 == 0 || i == n)); then
			wait "${pids[@]}" || true # not a bare wait: the listener is a child too
			pids=()
		fi
	done
	ok=$(wc -l <"$WORK/ok")
	printf '%d/%d connections ok; seen at far: isp1 (%s) %d, isp2 (%s) %d, other %d\n' \
		"$ok" "$n" $a1 "$(count "$fam" via_isp1)" $a2 "$(count "$fam" via_isp2)" "$(count "$fam" other)"
}

show_router() {
	echo "--- ip rule"
	nsx "$ROUTER" ip rule show
	for table in main 100 101 102; do
		echo "--- ip route show table $table"
		nsx "$ROUTER" ip route show table "$table" 2>&1 || true
	done
	echo "--- nft list table inet flowpin"
	nsx "$ROUTER" nft list table inet flowpin
}

# link_state LINK: the link's state as the running daemon reports it.
link_state() {
	# The column after the mark: GATEWAY may be several words ("dev ppp0 (auto)").
	nsx "$ROUTER" "$BIN" status 2>/dev/null | awk -v l="$1" '$1 == l { for (i = 3; i < NF; i++) if ($i ~ /^0x/) { print $(i + 1); exit } }'
}

# wait_state LINK STATE: wait (10 s at most) until the daemon reports it,
# then say how long that took.
wait_state() {
	local start=${EPOCHREALTIME/./}
	for _ in $(seq 100); do
		if [[ $(link_state "$1") == "$2" ]]; then
			printf '(%s: %s, %d ms later)\n' "$1" "$2" $(((${EPOCHREALTIME/./} - start) / 1000))
			return
		fi
		sleep 0.1
	done
	echo "(after 10 s, $1 is still $(link_state "$1"), not $2)"
}

OUTAGE='table netdev outage {
	chain in {
		type filter hook ingress device "cust" priority -500; policy drop;
	}
}'

heading "flowpin --version"
"$BIN" --version

heading "Before flowpin: lan -> far (no NAT: isp1 drops source 10.77.0.2, and fd00:77::2)"
traffic 2
traffic 2 ip6

cat >"$WORK/flowpin.yaml" <<EOF
links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    weight: 3
    nat: true
  - name: isp2
    interface: wan2
    gateway: 198.51.100.1
    weight: 1
    nat: true
EOF
heading "Config ($WORK/flowpin.yaml)"
cat "$WORK/flowpin.yaml"

heading "A typo in the config is one line naming file, line, section and key; nothing is applied"
sed 's/^    weight: 3$/    weight: 3\n    check: {intervl: 1s}/' "$WORK/flowpin.yaml" >"$WORK/typo.yaml"
nsx "$ROUTER" "$BIN" apply -c "$WORK/typo.yaml" || echo "(flowpin apply exited $?)"

heading "flowpin plan"
nsx "$ROUTER" "$BIN" plan -c "$WORK/flowpin.yaml"

heading "flowpin apply"
nsx "$ROUTER" "$BIN" apply -c "$WORK/flowpin.yaml"

heading "Router state after apply"
show_router

heading "60 connections lan -> far (weights isp1:isp2 = 3:1)"
traffic 60

heading "flowpin status: flows per link, counted from conntrack by their link mark"
nsx "$ROUTER" "$BIN" status -c "$WORK/flowpin.yaml"

heading "isp2 is out at boot (its port is down) -> flowpin apply leaves it out, with a warning"
nsx "$ISP2" ip link set dev cust down
nsx "$ROUTER" "$BIN" apply -c "$WORK/flowpin.yaml" || echo "(flowpin apply exited $?)"
nsx "$ROUTER" ip route show table 100
traffic 30
nsx "$ISP2" ip link set dev cust up
sleep 0.2

# The daemon probes each link every 300 ms through that link only; 3 bad
# rounds take it down, 3 good ones bring it back.
sed -i 's/^    nat: true$/    nat: true\n    check: {targets: [203.0.113.10], interval: 300ms, timeout: 300ms, fall: 3, rise: 3}/' "$WORK/flowpin.yaml"
heading "flowpin run (the daemon), with health checks against far, metrics and the status page"
grep check "$WORK/flowpin.yaml"
# Not through nsx: $! must be the daemon itself (ip netns exec execs it).
# --metrics-host: a browser on this host names the forwarded port (below)
# in its Host header, and the daemon answers only names it knows.
ip netns exec "$ROUTER" "$BIN" run -c "$WORK/flowpin.yaml" --metrics 127.0.0.1:9108 \
	--metrics-host "127.0.0.1:$DEMO_PORT,localhost:$DEMO_PORT" >"$WORK/run.log" 2>&1 &
DAEMON=$!
wait_state isp1 up
wait_state isp2 up
# The page listens on the router namespace's localhost. socat carries
# each connection to this host's 127.0.0.1:$DEMO_PORT into it.
if [[ $DEMO_HOLD -gt 0 ]] && command -v socat >/dev/null; then
	socat TCP-LISTEN:"$DEMO_PORT",bind=127.0.0.1,reuseaddr,fork \
		EXEC:"ip netns exec $ROUTER socat STDIO TCP\:127.0.0.1\:9108" 2>"$WORK/socat.log" &
	FORWARDER=$!
	PAGE="http://127.0.0.1:$DEMO_PORT/"
else
	PAGE="(install socat, and keep DEMO_HOLD above 0, to open it from this host) ip netns exec $ROUTER curl http://127.0.0.1:9108/status.json"
fi
echo "status page: $PAGE"
nsx "$ROUTER" "$BIN" status -c "$WORK/flowpin.yaml"
traffic 60

heading "While the daemon runs, flowpin apply and down refuse: the daemon owns the namespace"
nsx "$ROUTER" "$BIN" apply -c "$WORK/flowpin.yaml" || echo "(flowpin apply exited $?)"

heading "flowpin status as an unprivileged user: answered by the daemon over its root-only socket"
ls -l /run/flowpin/ | grep "$(stat -L -c %i /run/netns/$ROUTER)" || true
nsx "$ROUTER" setpriv --reuid=nobody --regid=nogroup --clear-groups "$BIN" status 2>&1 || echo "(exit $?: root, or members of group flowpin, may read it)"

heading "isp2 fails silently (its upstream drops everything; the carrier stays up)"
nsx "$ISP2" nft -f - <<<"$OUTAGE"
wait_state isp2 down
nsx "$ROUTER" "$BIN" status -c "$WORK/flowpin.yaml"
nsx "$ROUTER" ip route show table 100
traffic 30

heading "isp2 recovers"
nsx "$ISP2" nft delete table netdev outage
wait_state isp2 up
nsx "$ROUTER" "$BIN" status -c "$WORK/flowpin.yaml"
traffic 60

heading "A moment of flowpin status --watch (a frame a second)"
nsx "$ROUTER" timeout --preserve-status -s INT 3.5 "$BIN" status --watch 1s -c "$WORK/flowpin.yaml" || true

if [[ -n $FORWARDER && $DEMO_HOLD -gt 0 ]]; then
	heading "The status page, live for ${DEMO_HOLD}s while traffic runs: $PAGE"
	echo "Open it in a browser on this host; isp2 fails silently halfway through and comes back. Ctrl-C ends the demo."
	# Keep some traffic going so the graphs move: a connection every 50 ms.
	(while :; do nsx "$LAN" timeout 1 bash -c "exec 3<>/dev/tcp/$SERVICE/$PORT" 2>/dev/null || true; sleep 0.05; done) &
	BG=$!
	for ((s = DEMO_HOLD; s > 0; s--)); do
		if ((s == DEMO_HOLD / 2)); then
			printf '\n%s\n' "isp2 fails silently now"
			nsx "$ISP2" nft -f - <<<"$OUTAGE"
		elif ((s == DEMO_HOLD / 4)); then
			printf '\n%s\n' "isp2 recovers"
			nsx "$ISP2" nft delete table netdev outage
		fi
		printf '\r%3ds left ' "$s"
		sleep 1
	done
	echo
	kill "$BG" 2>/dev/null || true
	wait "$BG" 2>/dev/null || true
fi

heading "The daemon's log (SIGTERM: it exits, routing stays as applied)"
[[ -n $FORWARDER ]] && { kill "$FORWARDER" 2>/dev/null; wait "$FORWARDER" 2>/dev/null || true; FORWARDER=; }
kill -TERM "$DAEMON"
wait "$DAEMON" || true
DAEMON=
cut -c1-200 "$WORK/run.log"

heading "flowpin down: the router is as it was"
nsx "$ROUTER" "$BIN" down -c "$WORK/flowpin.yaml"
nsx "$ROUTER" ip rule show
nsx "$ROUTER" ip route show table main
nsx "$ROUTER" nft list tables

heading "Backup tier: isp2 is tier 2 and carries nothing while isp1 is up"
cat >"$WORK/policy.yaml" <<EOF
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, weight: 3, nat: true}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1, nat: true, tier: 2}
EOF
cat "$WORK/policy.yaml"
nsx "$ROUTER" "$BIN" apply -c "$WORK/policy.yaml"
traffic 30
nsx "$ROUTER" "$BIN" status -c "$WORK/policy.yaml" | sed -n '/^POLICY/,/^$/p'

heading "isp1's port goes down: the default policy's active tier moves to isp2"
nsx "$ROUTER" ip link set dev wan1 down
nsx "$ROUTER" "$BIN" apply -c "$WORK/policy.yaml" 2>&1 | grep -v WARN
nsx "$ROUTER" ip route show table 100
traffic 20
nsx "$ROUTER" ip link set dev wan1 up
sleep 0.3

heading "Traffic rules: a destination and port rule sends its flows to a policy that prefers isp2"
cat >"$WORK/rules.yaml" <<EOF
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, weight: 3, nat: true}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1, nat: true}
policies:
  - {name: isp2-first, tiers: [[isp2], [isp1]], last_resort: unreachable}
rules:
  - {name: far-via-isp2, proto: tcp, dst: [$SERVICE], dst_ports: [$PORT], policy: isp2-first}
EOF
cat "$WORK/rules.yaml"
nsx "$ROUTER" "$BIN" apply -c "$WORK/rules.yaml"
traffic 30
nsx "$ROUTER" "$BIN" status -c "$WORK/rules.yaml" | sed -n '/^POLICY/,$p' | grep -v '^warning'
nsx "$ROUTER" "$BIN" explain -c "$WORK/rules.yaml" $SERVICE --from 10.77.0.2 --iif lan --proto tcp --sport 40000 --dport $PORT | grep -E 'classify|policy|=>'

cat >"$WORK/sticky.yaml" <<EOF
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, weight: 1, nat: true}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1, weight: 1, nat: true}
rules:
  - {name: banking, proto: tcp, dst_ports: [$PORT], policy: default, sticky: 10m}
EOF
heading "Sticky: with weights 1:1, every connection of the one LAN host takes the link its first one took"
grep banking "$WORK/sticky.yaml"
nsx "$ROUTER" "$BIN" apply -c "$WORK/sticky.yaml"
traffic 30
nsx "$ROUTER" "$BIN" explain -c "$WORK/sticky.yaml" $SERVICE --from 10.77.0.2 --iif lan --proto tcp --sport 40001 --dport $PORT | grep -E 'classify|=>'

heading "flowpin down removes the policies, rules and sticky sets too"
nsx "$ROUTER" "$BIN" down -c "$WORK/sticky.yaml"
nsx "$ROUTER" ip rule show
nsx "$ROUTER" nft list tables

heading "IPv6: dual-stack links, NAT66, each family balanced and pinned on its own"
cat >"$WORK/dual.yaml" <<EOF
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, gateway6: 2001:db8:1::1, weight: 3, nat: true}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1, gateway6: 2001:db8:2::1, weight: 1, nat: true}
EOF
cat "$WORK/dual.yaml"
nsx "$ROUTER" "$BIN" apply -c "$WORK/dual.yaml"
traffic 60 ip6
traffic 60
echo "--- ip -6 rule; ip -6 route show table 100"
nsx "$ROUTER" ip -6 rule show
nsx "$ROUTER" ip -6 route show table 100
nsx "$ROUTER" "$BIN" explain -c "$WORK/dual.yaml" $SERVICE6 --from fd00:77::2 --iif lan --proto tcp --sport 40000 --dport $PORT | grep -E 'hash|=>'
echo "--- neighbour discovery is never marked or pinned: the gateways are resolved on their own links"
nsx "$ROUTER" ip -6 neigh show | grep -E '2001:db8:[12]::1 '
nsx "$ROUTER" "$BIN" down -c "$WORK/dual.yaml"

heading "Operating it: the daemon with a hook, reloaded without a restart"
cat >"$WORK/hook.sh" <<'EOF'
#!/bin/sh
echo "hook: $FLOWPIN_LINK ($FLOWPIN_INTERFACE, $FLOWPIN_FAMILY) is $FLOWPIN_STATE; up: $FLOWPIN_UP_LINKS; why: $FLOWPIN_REASON" >>"${0%.sh}.log"
EOF
chmod +x "$WORK/hook.sh"
# The daemon's config from above (weights 3:1, checks), and a hook.
{ cat "$WORK/flowpin.yaml"; cat <<EOF; } >"$WORK/ops.yaml"
hooks:
  on_change: $WORK/hook.sh   # run on every link state change, one at a time per link
  timeout: 5s
EOF
cat "$WORK/ops.yaml"
ip netns exec "$ROUTER" "$BIN" run -c "$WORK/ops.yaml" >"$WORK/ops.log" 2>&1 &
DAEMON=$!
wait_state isp1 up
wait_state isp2 up
traffic 40
echo "--- the config now says weight 1 for isp1; flowpin reload (or SIGHUP, or systemctl reload flowpin)"
sed -i 's/^    weight: 3$/    weight: 1/' "$WORK/ops.yaml"
nsx "$ROUTER" "$BIN" reload
traffic 40
echo "--- a broken config is refused: the daemon runs on, the kernel is unchanged"
cp "$WORK/ops.yaml" "$WORK/ops.good"
sed -i 's/^    weight: 1$/    weight: -2/' "$WORK/ops.yaml"
nsx "$ROUTER" "$BIN" reload || echo "(flowpin reload exited $?)"
cp "$WORK/ops.good" "$WORK/ops.yaml"
echo "--- isp2 fails silently and recovers: the hook runs each time"
nsx "$ISP2" nft -f - <<<"$OUTAGE"
wait_state isp2 down
nsx "$ISP2" nft delete table netdev outage
wait_state isp2 up
# Hooks run in the background: wait (5 s at most) for both.
for _ in $(seq 50); do
	[[ $(wc -l <"$WORK/hook.log" 2>/dev/null) -ge 2 ]] && break
	sleep 0.1
done
cut -c1-200 "$WORK/hook.log"

heading "flowpin use isp2 -- COMMAND: every connection the command opens leaves by isp2"
echo "the router's own 20 connections, without use:"
traffic 20 ip "$ROUTER"
echo "the same under flowpin use isp2 (a cgroup of its own; an nft socket cgroupv2 match marks its packets):"
nsx "$FAR" nft reset counters table ip demo >/dev/null
nsx "$ROUTER" "$BIN" use -c "$WORK/ops.yaml" isp2 -- bash -c "for i in \$(seq 20); do timeout 1 bash -c 'exec 3<>/dev/tcp/$SERVICE/$PORT'; done"
printf 'seen at far: isp1 (192.0.2.2) %d, isp2 (198.51.100.2) %d\n' "$(count ip via_isp1)" "$(count ip via_isp2)"
kill -TERM "$DAEMON"
wait "$DAEMON" || true
DAEMON=
grep -E 'reload|refused' "$WORK/ops.log" | cut -c1-220
nsx "$ROUTER" "$BIN" down -c "$WORK/ops.yaml" >/dev/null

heading "On-demand backup: isp2 (think metered LTE) stays down until isp1 fails"
cat >"$WORK/ondemand.yaml" <<EOF
links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    nat: true
    check: {targets: [$SERVICE], interval: 300ms, timeout: 300ms, fall: 3, rise: 3}
  - name: isp2
    interface: wan2
    gateway: 198.51.100.1
    nat: true
    tier: 2
    check: {targets: [$SERVICE], interval: 300ms, timeout: 300ms, fall: 3, rise: 3}
    on_demand:
      up: ip link set wan2 up       # when its tier becomes the active one
      down: ip link set wan2 down   # once a higher tier has been back for keep
      keep: 3s
EOF
sed -n '/name: isp2/,$p' "$WORK/ondemand.yaml"
ip netns exec "$ROUTER" "$BIN" run -c "$WORK/ondemand.yaml" >"$WORK/od.log" 2>&1 &
DAEMON=$!
wait_state isp1 up
echo "isp2 was up when the daemon started and is not needed: down after keep (3s)"
wait_state isp2 standby
nsx "$ROUTER" "$BIN" status | grep -E '^(LINK|isp)'
echo "wan2: $(ip -n "$ROUTER" -o link show wan2 | grep -o 'state [A-Z]*')"
traffic 20
echo "--- isp1 fails silently"
nsx "$ISP1" nft -f - <<<"$OUTAGE"
wait_state isp1 down
wait_state isp2 up
echo "wan2: $(ip -n "$ROUTER" -o link show wan2 | grep -o 'state [A-Z]*')"
traffic 20
echo "--- isp1 recovers; isp2's flows are deleted and it goes down after keep (3s)"
nsx "$ISP1" nft delete table netdev outage
wait_state isp1 up
wait_state isp2 standby
nsx "$ROUTER" "$BIN" status | grep -E '^(LINK|isp)'
echo "wan2: $(ip -n "$ROUTER" -o link show wan2 | grep -o 'state [A-Z]*')"
traffic 20
kill -TERM "$DAEMON"
wait "$DAEMON" || true
DAEMON=
grep -E 'on-demand|standby' "$WORK/od.log" | cut -c1-200
nsx "$ROUTER" ip link set dev wan2 up
nsx "$ROUTER" "$BIN" down -c "$WORK/ondemand.yaml"

heading "A PPP-like uplink: isp2 over a point-to-point session (a tun pair carried by a process)"
# The Ethernet cable to isp2 goes; a session takes its place, as PPPoE,
# WireGuard or an LTE modem in raw-IP mode would: POINTOPOINT, NOARP, no
# link-layer address, an address with a peer, and no default route in main
# (nodefaultroute). Killing the process ends the session: both interfaces
# vanish. start_session ADDR and stop_session play the ISP's side.
ip -n "$ROUTER" link del wan2
start_session() {
	"$TUNPAIR" "$ROUTER" wan2 "$ISP2" cust >"$WORK/session.out" 2>&1 &
	SESSION=$!
	for _ in $(seq 50); do grep -q ready "$WORK/session.out" && break; sleep 0.1; done
	ip -n "$ROUTER" addr add "$1" peer 198.51.100.1/32 dev wan2
	ip -n "$ISP2" addr add 198.51.100.1 peer "$1"/32 dev cust
	ip -n "$ROUTER" link set dev wan2 up
	ip -n "$ISP2" link set dev cust up
	# The ISP's BCP38 follows the address it handed out.
	nsx "$ISP2" nft delete table netdev bcp38 2>/dev/null || true
	nsx "$ISP2" nft -f - <<-EOF
		table netdev bcp38 {
			chain in {
				type filter hook ingress device "cust" priority 0;
				ip saddr != $1 drop
			}
		}
	EOF
}
stop_session() {
	kill "$SESSION"
	wait "$SESSION" 2>/dev/null || true
	SESSION=
}
# isp2_cable gives the router its Ethernet cable to isp2 back, where a
# PPP-like section left a session or none.
isp2_cable() {
	ip -n "$ROUTER" link show wan2 2>/dev/null | grep -q link/ether && return
	ip -n "$ROUTER" link del wan2 2>/dev/null || true
	ip -n "$ISP2" link del cust 2>/dev/null || true
	veth "$ROUTER" wan2 "$ISP2" cust
	ip -n "$ROUTER" addr add 198.51.100.2/24 dev wan2
	ip -n "$ISP2" addr add 198.51.100.1/24 dev cust
	nsx "$ISP2" nft delete table netdev bcp38 2>/dev/null || true
	nsx "$ISP2" nft -f - <<-EOF
		table netdev bcp38 {
			chain in {
				type filter hook ingress device "cust" priority 0;
				ip saddr != 198.51.100.2 drop
			}
		}
	EOF
}
start_session 198.51.100.2
ip -n "$ROUTER" -d link show wan2 | head -2
ip -n "$ROUTER" addr show dev wan2 | grep inet
cat >"$WORK/ppp.yaml" <<EOF
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, check: {targets: [$SERVICE], interval: 300ms, timeout: 300ms, fall: 3, rise: 3}}
  - {name: isp2, interface: wan2, gateway: auto, nat: true, check: {interval: 300ms, timeout: 300ms, fall: 3, rise: 3}}
EOF
echo "isp2 has gateway: auto and no check targets: it probes its peer"
cat "$WORK/ppp.yaml"
ip netns exec "$ROUTER" "$BIN" run -c "$WORK/ppp.yaml" >"$WORK/ppp.log" 2>&1 &
DAEMON=$!
wait_state isp1 up
wait_state isp2 up
echo "--- ip route show table 102 (isp2's): no next hop, the session's address as source; table 100"
nsx "$ROUTER" ip route show table 102
nsx "$ROUTER" ip route show table 100
traffic 40
nsx "$ROUTER" "$BIN" status | grep -E '^(LINK|isp)'
echo "--- the session ends (the process is killed, wan2 vanishes)"
stop_session
wait_state isp2 down
traffic 20
echo "--- a new session with a new address (198.51.100.7): adopted without a restart"
start_session 198.51.100.7
wait_state isp2 up
nsx "$ROUTER" ip route show table 102
nsx "$ROUTER" ip rule show | grep 'lookup 102'
traffic 40
echo "of them from the new address 198.51.100.7: $(count ip via_isp2_session2)"
kill -TERM "$DAEMON"
wait "$DAEMON" || true
DAEMON=
grep -E 'link (down|up)' "$WORK/ppp.log" | cut -c1-200
nsx "$ROUTER" "$BIN" down -c "$WORK/ppp.yaml"
stop_session
# The sections below are in their own files; those that need the
# PPP-like session come first, then isp2 gets its cable back (isp2_cable).
here=$(dirname "$(realpath "$0")")
# shellcheck source=scripts/demo_p2p6.sh
source "$here/demo_p2p6.sh"
# shellcheck source=scripts/demo_dns.sh
source "$here/demo_dns.sh"
# shellcheck source=scripts/demo_operator.sh
source "$here/demo_operator.sh"
# shellcheck source=scripts/demo_prefixes6.sh
source "$here/demo_prefixes6.sh"
# shellcheck source=scripts/demo_sets.sh
source "$here/demo_sets.sh"

# shellcheck source=scripts/demo_ha.sh
source "$here/demo_ha.sh"
heading "Done (namespaces $P-* are removed on exit)"
