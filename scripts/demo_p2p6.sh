# Sourced by demo.sh after its PPP-like section (it uses demo.sh's
# functions, namespaces and start_session): IPv6 over the session.
heading "IPv6 over the PPP-like link: gateway6: auto, default dev wan2 with no next hop"
# A session carrying IPv6 has only random link-local addresses on each
# end (new every session), so there is no peer to learn: the link's IPv6
# table routes by the device alone.
start_session 198.51.100.2
ip -n "$ROUTER" -6 addr add 2001:db8:2::2/64 dev wan2 nodad
ip -n "$ISP2" -6 addr add 2001:db8:2::1/64 dev cust nodad
cat >"$WORK/ppp6.yaml" <<EOF
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, gateway6: 2001:db8:1::1, nat: true}
  - {name: isp2, interface: wan2, gateway: auto, gateway6: auto, nat: true}
EOF
cat "$WORK/ppp6.yaml"
nsx "$ROUTER" "$BIN" apply -c "$WORK/ppp6.yaml"
echo "--- ip -6 route show table 102 (isp2's) and table 100"
nsx "$ROUTER" ip -6 route show table 102
nsx "$ROUTER" ip -6 route show table 100
traffic 40 ip6
nsx "$ROUTER" "$BIN" down -c "$WORK/ppp6.yaml"
stop_session
