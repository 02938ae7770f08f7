# shellcheck shell=bash
# The HA pair section of the demo (README, "HA pair"): sourced by demo.sh,
# whose functions (heading, nsx, veth) and variables ($BIN, $P, $WORK, ALL)
# it uses. Two routers, fw-a and fw-b, run keepalived, conntrackd and
# flowpin from examples/ha; 10 long-lived flows exchange data every 200 ms;
# fw-a dies hard, and fw-b takes the flows over.

HA_EX="$(dirname "$(realpath "${BASH_SOURCE[0]}")")/../examples/ha"
HLAN=$P-hlan HA=$P-ha HB=$P-hb HISP1=$P-hisp1 HISP2=$P-hisp2 HFAR=$P-hfar HSW=$P-hsw
HA_NS=("$HLAN" "$HA" "$HB" "$HISP1" "$HISP2" "$HFAR" "$HSW")
HA_PIDS=()

# ha_cleanup kills what this section started (by pid; keepalived's VRRP
# child by its pid file), before demo.sh's cleanup removes the namespaces.
ha_cleanup() {
	local p
	for p in "$WORK"/ha-*/*.pid; do
		[[ -f $p ]] && { kill -KILL "$(cat "$p")" 2>/dev/null || true; }
	done
	for p in "${HA_PIDS[@]}"; do
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	HA_PIDS=()
	rm -f "$WORK"/ha-*/*.pid
	return 0
}
trap 'set +e; ha_cleanup; cleanup' EXIT
for ns in "${HA_NS[@]}"; do
	if ip netns list | grep -qw "^$ns"; then
		echo "demo_ha.sh: namespace $ns already exists" >&2
		exit 1
	fi
done
ALL+=("${HA_NS[@]}")

heading "HA pair: fw-a and fw-b (keepalived, conntrackd, flowpin run with examples/ha), fw-a dies"
for ns in "${HA_NS[@]}"; do
	ip netns add "$ns"
	ip -n "$ns" link set dev lo up
	nsx "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 net.ipv6.conf.all.disable_ipv6=1
done
for br in brlan brw1 brw2; do
	ip -n "$HSW" link add "$br" type bridge mcast_snooping 0
	ip -n "$HSW" link set "$br" up
done
# port NS DEV SWITCHPORT BRIDGE: a cable from NS into the switch.
port() { veth "$1" "$2" "$HSW" "$3" && ip -n "$HSW" link set "$3" master "$4"; }
port "$HLAN" eth0 lan-c brlan
port "$HISP1" cust w1-i brw1
port "$HISP2" cust w2-i brw2
n=0
for fw in "$HA" "$HB"; do
	s=$([[ $fw == "$HA" ]] && echo a || echo b)
	port "$fw" lan "lan-$s" brlan
	port "$fw" wan1 "w1-$s" brw1
	port "$fw" wan2 "w2-$s" brw2
	ip -n "$fw" addr add "10.9.0.$((2 + n))/24" dev lan
	ip -n "$fw" addr add "192.0.2.$((3 + n))/24" dev wan1
	ip -n "$fw" addr add "198.51.100.$((3 + n))/24" dev wan2
	nsx "$fw" sysctl -qw net.ipv4.ip_forward=1
	ip -n "$fw" route add default via 192.0.2.1 dev wan1
	n=$((n + 1))
done
veth "$HA" sync0 "$HB" sync0
ip -n "$HA" addr add 10.255.0.1/30 dev sync0
ip -n "$HB" addr add 10.255.0.2/30 dev sync0
ip -n "$HLAN" addr add 10.9.0.10/24 dev eth0
ip -n "$HLAN" route add default via 10.9.0.1
veth "$HISP1" core "$HFAR" isp1
veth "$HISP2" core "$HFAR" isp2
ip -n "$HFAR" addr add 203.0.113.10/32 dev lo
for i in 1 2; do
	isp=$([[ $i == 1 ]] && echo "$HISP1" || echo "$HISP2")
	cust=$([[ $i == 1 ]] && echo 192.0.2 || echo 198.51.100)
	ip -n "$isp" addr add "$cust.1/24" dev cust
	ip -n "$isp" addr add "100.64.$i.1/30" dev core
	nsx "$isp" sysctl -qw net.ipv4.ip_forward=1
	ip -n "$isp" route add 203.0.113.0/24 via "100.64.$i.2"
	ip -n "$HFAR" addr add "100.64.$i.2/30" dev "isp$i"
	ip -n "$HFAR" route add "$cust.0/24" via "100.64.$i.1" src 203.0.113.10
done

# Each node's copy of the example files; only the paths of the files a
# node owns move (two nodes on one host cannot share /etc and /var/run).
for s in a b; do
	d=$WORK/ha-$s
	mkdir -p "$d"
	for f in "keepalived-$s.conf:keepalived.conf" "conntrackd-$s.conf:conntrackd.conf"; do
		sed -e "s#/etc/conntrackd/#$d/#g" -e "s#/var/run/conntrackd.ctl#$d/ctl#" -e "s#/var/lock/conntrack.lock#$d/lock#" \
			"$HA_EX/${f%%:*}" >"$d/${f#*:}"
	done
	sed -e "s#/etc/conntrackd/conntrackd.conf#$d/conntrackd.conf#" -e "s#/var/lock/conntrack.lock#$d/lock#" \
		/usr/share/doc/conntrackd/examples/sync/primary-backup.sh >"$d/primary-backup.sh"
	chmod 755 "$d/primary-backup.sh"
done
# start_node S NS: conntrackd, then flowpin run, as a boot would.
start_node() {
	local d=$WORK/ha-$1
	# ip netns exec, not nsx: $! is then the daemon's own pid.
	ip netns exec "$2" conntrackd -C "$d/conntrackd.conf" >"$d/conntrackd.log" 2>&1 &
	HA_PIDS+=($!)
	echo $! >"$d/conntrackd.pid"
	disown $!
	for _ in $(seq 50); do [[ -S $d/ctl ]] && break; sleep 0.1; done
	ip netns exec "$2" "$BIN" run -c "$HA_EX/flowpin.yaml" >"$d/flowpin.log" 2>&1 &
	HA_PIDS+=($!)
	echo $! >"$d/flowpin.pid"
	disown $!
	for _ in $(seq 50); do grep -q msg=running "$d/flowpin.log" && break; sleep 0.1; done
}
# start_vrrp S NS: keepalived.
start_vrrp() {
	local d=$WORK/ha-$1
	ip netns exec "$2" keepalived -n -l -P -f "$d/keepalived.conf" -p "$d/keepalived.pid" -r "$d/vrrp.pid" >"$d/keepalived.log" 2>&1 &
	HA_PIDS+=($!)
	disown $!
}
start_node b "$HB" # either node may start first
start_node a "$HA"
holds_all() { [[ $(ip -n "$1" -o -4 addr show | grep -cE ' (10\.9\.0\.1|192\.0\.2\.2|198\.51\.100\.2)/') == 3 ]]; }
start_vrrp b "$HB"
start_vrrp a "$HA" # the higher priority: it takes the VIPs
for _ in $(seq 100); do holds_all "$HA" && break; sleep 0.1; done
sleep 0.5
echo "--- flowpin status on fw-a, then on fw-b (the same marks; the role from each node's own addresses)"
nsx "$HA" "$BIN" status -c "$HA_EX/flowpin.yaml" | grep -E '^(LINK|isp|ha:)'
nsx "$HB" "$BIN" status -c "$HA_EX/flowpin.yaml" | grep -E '^(LINK|isp|ha:)'

# An echo service at far, and 10 flows from the LAN host that send a line
# every 200 ms for 8 s and print how many came back, and from which port.
ip netns exec "$HFAR" perl -MIO::Socket::IP -e '
	$SIG{CHLD} = "IGNORE";
	my $s = IO::Socket::IP->new(LocalHost => "203.0.113.10", LocalPort => 7000, Listen => 64, ReuseAddr => 1) or die "$!";
	while (1) { my $c = $s->accept or next; if (!fork) { while (<$c>) { print $c $_ } exit } close $c }' >"$WORK/ha-server.log" 2>&1 &
HA_PIDS+=($!)
sleep 0.3
for i in $(seq 10); do
	nsx "$HLAN" timeout 15 perl -MIO::Socket::IP -e '
		my $c = IO::Socket::IP->new(PeerHost => "203.0.113.10", PeerPort => 7000) or die "connect: $!\n";
		my $n = 0;
		for my $i (1 .. 40) { print $c "$i\n"; $c->flush; my $l = <$c>; last unless defined $l; $n++; select(undef, undef, undef, 0.2) }
		print "$n\n"' >"$WORK/ha-flow$i" 2>&1 &
	HA_PIDS+=($!)
done
sleep 1.5
echo "--- at far, the flows' NAT sources (the VIPs: both links)"
nsx "$HFAR" ss -Htn state established sport = :7000 | awk '{ print $NF }' | sort >"$WORK/ha-before"
cut -d: -f1 "$WORK/ha-before" | sort | uniq -c
echo "--- fw-a dies: its links go down, keepalived, conntrackd and flowpin are SIGKILLed"
killed=${EPOCHREALTIME/./}
for dev in lan wan1 wan2 sync0; do ip -n "$HA" link set "$dev" down; done
for f in vrrp keepalived conntrackd flowpin; do kill -KILL "$(cat "$WORK/ha-a/$f.pid")" 2>/dev/null || true; done
for _ in $(seq 500); do holds_all "$HB" && break; sleep 0.01; done
printf 'takeover: fw-b holds the VIPs %d ms after fw-a died\n' $(((${EPOCHREALTIME/./} - killed) / 1000))
sleep 1
nsx "$HB" "$BIN" status -c "$HA_EX/flowpin.yaml" | grep -E '^(LINK|isp|ha:)'
nsx "$HFAR" ss -Htn state established sport = :7000 | awk '{ print $NF }' | sort >"$WORK/ha-after"
# The flows: the processes after the three of each node and the server.
wait "${HA_PIDS[@]:7}" 2>/dev/null || true
kept=0
for i in $(seq 10); do [[ $(cat "$WORK/ha-flow$i") == 40 ]] && kept=$((kept + 1)); done
same=$(comm -12 "$WORK/ha-before" "$WORK/ha-after" | wc -l)
echo "flows kept: $kept of 10 (every echo came back); $same of 10 with the same NAT source address and port at far"
ha_cleanup
