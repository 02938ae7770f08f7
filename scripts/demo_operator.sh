# shellcheck shell=bash
# Sourced by demo.sh just before its end (it uses demo.sh's heading, nsx,
# veth, traffic, wait_state, $ROUTER, $ISP2, $WORK, $BIN...): operator
# control, flowpin link drain then auto, and a tiny quota running out.

heading "Operator control: flowpin link isp2 drain, then auto; isp2's 10 kB daily quota runs out"
isp2_cable
cat >"$WORK/operator.yaml" <<EOF
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, check: {targets: [$SERVICE], interval: 300ms, timeout: 300ms, fall: 3, rise: 3}}
  - name: isp2
    interface: wan2
    gateway: 198.51.100.1
    nat: true
    check: {targets: [$SERVICE], interval: 300ms, timeout: 300ms, fall: 3, rise: 3}
    quota: {bytes: 10kB, period: daily}
EOF
grep quota "$WORK/operator.yaml"
ip netns exec "$ROUTER" "$BIN" run -c "$WORK/operator.yaml" \
	--operator-state "$WORK/operator.json" --quota-state "$WORK/quota.json" >"$WORK/operator.log" 2>&1 &
DAEMON=$!
wait_state isp1 up
wait_state isp2 up
traffic 20
echo "--- flowpin link isp2 drain: no new flows on isp2, its established ones stay"
nsx "$ROUTER" "$BIN" link isp2 drain
nsx "$ROUTER" "$BIN" status | grep -E '^(LINK|isp)|drained by operator'
echo "--- flowpin verify with isp2 drained: checked against the daemon's plan, so isp2 out of the route is no drift"
nsx "$ROUTER" "$BIN" verify -c "$WORK/operator.yaml" --no-probe | grep -E '^ok +(daemon|routing|new flows)|^verify:'
traffic 20
echo "--- as nobody:"
nsx "$ROUTER" setpriv --reuid=nobody --regid=nogroup --clear-groups "$BIN" link isp2 auto 2>&1 || echo "(exit $?: root only)"
echo "--- flowpin link isp2 auto: back in the balance"
nsx "$ROUTER" "$BIN" link isp2 auto
traffic 20
echo "--- isp1 drained, so that new flows take isp2 until its quota runs out"
nsx "$ROUTER" "$BIN" link isp1 drain
traffic 60
wait_state isp2 standby
nsx "$ROUTER" "$BIN" link isp1 auto
traffic 20
nsx "$ROUTER" "$BIN" status | grep -E '^(LINK|isp)|quota'
echo "--- $WORK/quota.json (kept across restarts and reboots; /var/lib/flowpin/quota.json by default)"
sed -n '1,12p' "$WORK/quota.json"
kill -TERM "$DAEMON"
wait "$DAEMON" || true
DAEMON=
grep -E 'operator set|link (standby|down|up)|quota' "$WORK/operator.log" | cut -c1-200
nsx "$ROUTER" "$BIN" down -c "$WORK/operator.yaml"
