# shellcheck shell=bash
# Sourced by demo.sh (its functions and namespaces): traffic by name. A
# dnsmasq on the router, the LAN's resolver, fills flowpin's set for
# video.example from an upstream DNS server at far; new flows to the
# addresses it resolved leave by isp2, and keep doing so through an apply
# of a changed config, with no new DNS query.

heading "Traffic by name: dnsmasq on the router fills a set, and video.example's flows leave by isp2"
isp2_cable
# The upstream DNS server, at far: video.example is the service's address.
ip -n "$FAR" addr add 203.0.113.53/32 dev lo
cat >"$WORK/upstream.conf" <<EOF
listen-address=203.0.113.53
bind-interfaces
no-resolv
no-hosts
host-record=video.example,$SERVICE
EOF
ip netns exec "$FAR" dnsmasq --keep-in-foreground --conf-file="$WORK/upstream.conf" --pid-file="$WORK/upstream.pid" --user=root --log-facility=- 2>/dev/null &
LISTENER_PID+=" $!"
cat >"$WORK/sets.yaml" <<EOF
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1, nat: true}
sets:
  - name: video
    domains: [video.example]      # and its subdomains
rules:
  - {name: video-by-isp2, dst_set: video, policy: isp2}
EOF
cat "$WORK/sets.yaml"
nsx "$ROUTER" "$BIN" apply -c "$WORK/sets.yaml"
echo "--- flowpin dnsmasq: the lines dnsmasq needs"
nsx "$ROUTER" "$BIN" dnsmasq -c "$WORK/sets.yaml" | tee "$WORK/flowpin-dnsmasq.conf"
printf 'listen-address=10.77.0.1\nbind-interfaces\nno-resolv\nno-hosts\nserver=203.0.113.53\nconf-file=%s\n' "$WORK/flowpin-dnsmasq.conf" >"$WORK/router-dnsmasq.conf"
ip netns exec "$ROUTER" dnsmasq --keep-in-foreground --conf-file="$WORK/router-dnsmasq.conf" --pid-file="$WORK/router-dnsmasq.pid" --user=root --log-facility=- 2>/dev/null &
LISTENER_PID+=" $!"
# lookup NAME: an A query from the LAN to the router's dnsmasq (perl: no
# dig on a bare machine).
lookup() {
	nsx "$LAN" perl -MIO::Socket::IP -e '
		my $q = pack("n6", 7, 0x0100, 1, 0, 0, 0) . join("", map { chr(length) . $_ } split /\./, $ARGV[0]) . "\0" . pack("n2", 1, 1);
		for (1 .. 20) {
			my $s = IO::Socket::IP->new(PeerHost => "10.77.0.1", PeerPort => 53, Proto => "udp") or die "$!\n";
			$s->send($q);
			my $r;
			if (eval { local $SIG{ALRM} = sub { die }; alarm 1; $s->recv($r, 512); alarm 0; 1 } && length $r > 16) {
				print "$ARGV[0] -> ", join(".", unpack("C4", substr($r, -4))), "\n";
				exit 0;
			}
			select(undef, undef, undef, 0.1);
		}
		die "no answer\n";' "$1"
}
echo "--- before any client resolves video.example: balanced"
traffic 30
echo "--- a LAN client resolves it through the router's dnsmasq"
lookup video.example
nsx "$ROUTER" nft list set inet flowpin set4_video | grep -A1 elements
echo "--- now every new flow to it leaves by isp2"
traffic 30
echo "--- apply of a changed config, no new DNS query: the element stays"
sed -i 's/policy: isp2}/policy: isp2}\n  - {name: dns-by-isp1, proto: udp, dst_ports: [53], policy: isp1}/' "$WORK/sets.yaml"
nsx "$ROUTER" "$BIN" apply -c "$WORK/sets.yaml"
traffic 30
nsx "$ROUTER" "$BIN" status -c "$WORK/sets.yaml" | sed -n '/^SET/,/^state/p' | grep -v '^state'
nsx "$ROUTER" "$BIN" down -c "$WORK/sets.yaml"
echo "(after down, restart dnsmasq: its cached answers are not added to the new sets)"
