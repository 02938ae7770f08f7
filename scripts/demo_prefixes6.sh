# shellcheck shell=bash
# Sourced by demo.sh (its heading, nsx, veth, wait; $P, $BIN, $WORK,
# LISTENER_PID, DAEMON, ALL): IPv6 with each ISP's own prefix, no NAT66,
# translated 1:1 only while a link is down. Its own namespaces:
#
#   p6lan 2001:db8:1:100::2, 2001:db8:2:100::2 --- p6router ==wan1== p6isp1 --+-- p6far [2001:db8:ff::10]
#                                                            ==wan2== p6isp2 --+
#
# Each ISP routes its /56 to the router and drops anything else from it.

P6LAN=$P-p6lan P6R=$P-p6router P6I1=$P-p6isp1 P6I2=$P-p6isp2 P6FAR=$P-p6far
ALL+=("$P6LAN" "$P6R" "$P6I1" "$P6I2" "$P6FAR")
H1=2001:db8:1:100::2 H2=2001:db8:2:100::2

heading "IPv6 with each ISP's own prefix (prefixes6): no NAT66; translated 1:1 only while its link is down"
for ns in "$P6LAN" "$P6R" "$P6I1" "$P6I2" "$P6FAR"; do
	ip netns add "$ns"
	ip -n "$ns" link set dev lo up
	nsx "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.forwarding=1
done
veth "$P6LAN" eth0 "$P6R" lan
veth "$P6R" wan1 "$P6I1" cust
veth "$P6R" wan2 "$P6I2" cust
veth "$P6I1" core "$P6FAR" isp1
veth "$P6I2" core "$P6FAR" isp2
ip -n "$P6LAN" addr add $H1/64 dev eth0 nodad
ip -n "$P6LAN" addr add $H2/64 dev eth0 nodad
ip -n "$P6LAN" -6 route add default via 2001:db8:1:100::1
ip -n "$P6R" addr add 2001:db8:1:100::1/64 dev lan nodad
ip -n "$P6R" addr add 2001:db8:2:100::1/64 dev lan nodad
ip -n "$P6FAR" addr add 2001:db8:ff::10/128 dev lo
for n in 1 2; do
	isp=$P6I1
	[[ $n == 2 ]] && isp=$P6I2
	ip -n "$P6R" addr add "2001:db8:$n::2/64" dev "wan$n" nodad
	ip -n "$isp" addr add "2001:db8:$n::1/64" dev cust nodad
	ip -n "$isp" addr add "2001:db8:100:$n::1/64" dev core nodad
	ip -n "$P6FAR" addr add "2001:db8:100:$n::2/64" dev "isp$n" nodad
	ip -n "$isp" -6 route add "2001:db8:$n:100::/56" via "2001:db8:$n::2"
	ip -n "$isp" -6 route add default via "2001:db8:100:$n::2"
	ip -n "$P6FAR" -6 route add "2001:db8:$n::/48" via "2001:db8:100:$n::1" src 2001:db8:ff::10
	nsx "$isp" nft -f - <<-EOF
		table netdev bcp38 {
			chain in {
				type filter hook ingress device "cust" priority 0;
				ip6 saddr != { 2001:db8:$n::/64, 2001:db8:$n:100::/56, fe80::/10 } drop
			}
		}
	EOF
done
nsx "$P6FAR" nft -f - <<-EOF
	table ip6 p6 {
		counter from_h1 {}
		counter from_h2 {}
		counter other {}
		chain in {
			type filter hook input priority 0;
			# one count per connection: a retransmitted SYN is new too
			tcp dport $PORT ct mark 0x1 return
			tcp dport $PORT ct state new ip6 saddr $H1 counter name "from_h1" ct mark set 0x1
			tcp dport $PORT ct state new ip6 saddr $H2 counter name "from_h2" ct mark set 0x1
			tcp dport $PORT ct state new ip6 saddr != { $H1, $H2 } counter name "other" ct mark set 0x1
		}
	}
EOF
ip netns exec "$P6FAR" timeout 300 perl -MIO::Socket::IP -e '
	my $s = IO::Socket::IP->new(LocalHost => "2001:db8:ff::10", LocalPort => $ARGV[0],
		Listen => 1024, ReuseAddr => 1) or die "listen: $!\n";
	while (1) { my $c = $s->accept or next; close $c }' $PORT &
LISTENER_PID+=" $!"
sleep 0.5

# p6traffic N SRC: N connections from SRC to far, one at a time (0.3 s
# timeout each); then where they arrived from, by far's counters.
p6traffic() {
	nsx "$P6FAR" nft reset counters table ip6 p6 >/dev/null
	local ok
	ok=$(nsx "$P6LAN" perl -MIO::Socket::IP -e '
		my $ok = 0;
		for (1 .. $ARGV[0]) {
			my $c = IO::Socket::IP->new(PeerHost => "2001:db8:ff::10", PeerPort => $ARGV[2],
				LocalHost => $ARGV[1], Timeout => 0.3) or next;
			$ok++; close $c;
		}
		print $ok' "$1" "$2" $PORT)
	p6count() { nsx "$P6FAR" nft list counter ip6 p6 "$1" | awk '/packets/ { print $2 }'; }
	printf 'from %s: %d/%d connections ok; seen at far as %s %d, as %s %d, other %d\n' \
		"$2" "$ok" "$1" $H1 "$(p6count from_h1)" $H2 "$(p6count from_h2)" "$(p6count other)"
}

echo "--- without flowpin: a plain dual default route loses about half (the other ISP drops the source)"
nsx "$P6R" sysctl -qw net.ipv6.fib_multipath_hash_policy=1
ip -n "$P6R" -6 route add default nexthop via 2001:db8:1::1 dev wan1 nexthop via 2001:db8:2::1 dev wan2
p6traffic 20 $H1
p6traffic 20 $H2
ip -n "$P6R" -6 route replace default via 2001:db8:1::1 dev wan1
nsx "$P6R" sysctl -qw net.ipv6.fib_multipath_hash_policy=0

echo "--- isp2's /56 is delegated: the route dhcpcd installs for it (prefixes6: auto takes it)"
ip -n "$P6R" -6 route add unreachable 2001:db8:2:100::/56 dev lo proto dhcp metric 1001
ip -n "$P6R" -6 route show proto dhcp
cat >"$WORK/prefixes6.yaml" <<EOF
links:
  - name: isp1
    interface: wan1
    gateway6: 2001:db8:1::1
    prefixes6: [2001:db8:1:100::/56]
    check: {targets: ['2001:db8:ff::10'], interval: 300ms, timeout: 300ms, fall: 3, rise: 3}
  - name: isp2
    interface: wan2
    gateway6: 2001:db8:2::1
    prefixes6: auto
    check: {targets: ['2001:db8:ff::10'], interval: 300ms, timeout: 300ms, fall: 3, rise: 3}
EOF
cat "$WORK/prefixes6.yaml"
ip netns exec "$P6R" "$BIN" run -c "$WORK/prefixes6.yaml" >"$WORK/prefixes6.log" 2>&1 &
DAEMON=$!
for _ in $(seq 50); do
	nsx "$P6R" "$BIN" status 2>/dev/null | grep -q '^isp2 .* up ' && break
	sleep 0.1
done
echo "--- with flowpin: each prefix by its own ISP, untranslated"
nsx "$P6R" ip -6 rule show | grep -E 'from 2001:db8:[12]:100::/56'
p6traffic 20 $H1
p6traffic 20 $H2
nsx "$P6R" "$BIN" status | grep '^prefixes6'

echo "--- isp1's IPv6 dies silently (its upstream drops everything)"
nsx "$P6I1" nft -f - <<<'table inet outage { chain f { type filter hook forward priority -500; policy drop; }; }'
start=${EPOCHREALTIME/./}
for _ in $(seq 100); do
	nsx "$P6R" "$BIN" status 2>/dev/null | grep -q 'translated to' && break
	sleep 0.1
done
printf '(translating %d ms after the outage began)\n' $(((${EPOCHREALTIME/./} - start) / 1000))
nsx "$P6R" "$BIN" status | grep '^prefixes6'
nsx "$P6R" nft list chain inet flowpin nat | grep 'snat ip6 prefix'
p6traffic 20 $H1
nsx "$P6R" "$BIN" explain -c "$WORK/prefixes6.yaml" 2001:db8:ff::10 --from $H1 --iif lan --proto tcp --sport 40000 --dport $PORT | grep -E '^ *nat|=>'

echo "--- isp1 recovers: new flows leave as themselves again; the translation rule goes"
nsx "$P6I1" nft delete table inet outage
for _ in $(seq 100); do
	nsx "$P6R" "$BIN" status 2>/dev/null | grep -q 'translated to' || break
	sleep 0.1
done
nsx "$P6R" "$BIN" status | grep '^prefixes6'
p6traffic 20 $H1
kill -TERM "$DAEMON"
wait "$DAEMON" || true
DAEMON=
grep -E 'link (down|up)' "$WORK/prefixes6.log" | cut -c1-160
nsx "$P6R" "$BIN" down -c "$WORK/prefixes6.yaml" >/dev/null
