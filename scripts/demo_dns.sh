# shellcheck shell=bash
# Sourced by demo.sh (its functions and namespaces): DNS servers that follow
# the links, and an ARP probe that sees a modem stop answering (issue 24).

heading "DNS that follows the links: the resolv file lists the servers of the links up; an ARP probe"
start_session 198.51.100.2
cat >"$WORK/dns.yaml" <<EOF
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, dns: [203.0.113.53], check: {method: arp, interval: 300ms, timeout: 300ms, fall: 3, rise: 2}}
  - {name: isp2, interface: wan2, gateway: auto, nat: true, dns: [203.0.113.54], check: {interval: 300ms, timeout: 300ms, fall: 3, rise: 2}}
EOF
cat "$WORK/dns.yaml"
echo "--- arp on the point-to-point wan2 is refused, in one line:"
sed 's/check: {interval/check: {method: arp, interval/' "$WORK/dns.yaml" >"$WORK/dns-p2p.yaml"
nsx "$ROUTER" "$BIN" plan -c "$WORK/dns-p2p.yaml" 2>&1 | head -1 || true
ip netns exec "$ROUTER" "$BIN" run -c "$WORK/dns.yaml" --resolv-dir "$WORK/run" >"$WORK/dns.log" 2>&1 &
DAEMON=$!
wait_state isp1 up
wait_state isp2 up
# wait_resolv SERVERS: wait (3 s at most) until the file lists them, and show it.
wait_resolv() {
	local got
	for _ in $(seq 30); do
		got=$(awk '/^nameserver/ { printf "%s%s", sep, $2; sep = " " }' "$WORK/run/resolv.conf" 2>/dev/null)
		[[ $got == "$1" ]] && break
		sleep 0.1
	done
	echo "$WORK/run/resolv.conf lists: ${got:-no server}"
}
wait_resolv "203.0.113.53 203.0.113.54"
echo "--- each server's queries leave by its own link: host routes in the balance table"
nsx "$ROUTER" ip route show table 100
echo "--- isp1's modem stops answering ARP (IP still flows): the arp probe takes isp1 down"
nsx "$ISP1" nft -f - <<'EOF'
table netdev noarp {
	chain in {
		type filter hook ingress device "cust" priority -500;
		ether type arp drop
	}
}
EOF
wait_state isp1 down
wait_resolv "203.0.113.54"
nsx "$ISP1" nft delete table netdev noarp
wait_state isp1 up
wait_resolv "203.0.113.53 203.0.113.54"
kill -TERM "$DAEMON"
wait "$DAEMON" || true
DAEMON=
grep -E 'link (down|up)|resolv file' "$WORK/dns.log" | cut -c1-200
nsx "$ROUTER" "$BIN" down -c "$WORK/dns.yaml" >/dev/null
stop_session
