package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Wire protocol between the helpers: a client's first line is a unique token;
// the server records token -> remote address (as it saw it, i.e. after NAT)
// and then echoes every byte back until the client half-closes, and closes
// its side first. So the far end, not the client, does the active close and
// keeps TIME_WAIT, and a client can reuse a fixed source port at once.

// echoServer is a TCP echo server living in one namespace.
type echoServer struct {
	ln   net.Listener
	addr netip.AddrPort

	mu        sync.Mutex
	bySource  map[netip.Addr]int        // accepted connections per remote IP
	byToken   map[string]netip.AddrPort // remote as seen by the server
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// startEchoServer listens on listenAddr (e.g. "203.0.113.10:0",
// "0.0.0.0:7000" or "[2001:db8:ff::10]:0"; one family) inside ns. It stops
// in t.Cleanup.
func startEchoServer(t testing.TB, ns, listenAddr string) *echoServer {
	t.Helper()
	s := &echoServer{
		bySource: map[netip.Addr]int{},
		byToken:  map[string]netip.AddrPort{},
		conns:    map[net.Conn]struct{}{},
	}
	inNS(t, ns, func() error {
		var err error
		s.ln, err = net.Listen(tcpNetwork(listenAddr), listenAddr)
		return err
	})
	s.addr = s.ln.Addr().(*net.TCPAddr).AddrPort()
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.close)
	return s
}

// Port is the port the server listens on.
func (s *echoServer) Port() int { return int(s.addr.Port()) }

func (s *echoServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		ra := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		s.bySource[ra.Addr().Unmap()]++
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(c, ra)
	}
}

func (s *echoServer) handle(c net.Conn, ra netip.AddrPort) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	br := bufio.NewReader(c)
	tok, err := br.ReadString('\n')
	if err != nil {
		return
	}
	s.mu.Lock()
	s.byToken[strings.TrimSuffix(tok, "\n")] = ra
	s.mu.Unlock()
	if _, err := io.WriteString(c, tok); err != nil {
		return
	}
	_, _ = io.Copy(c, br)
}

func (s *echoServer) close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.ln.Close()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// Sources returns accepted connections per remote IP since the start (or the
// last Reset). Behind NAT the remote IP says which link a flow took.
func (s *echoServer) Sources() map[netip.Addr]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[netip.Addr]int, len(s.bySource))
	for k, v := range s.bySource {
		m[k] = v
	}
	return m
}

// Reset forgets the per-source counts.
func (s *echoServer) Reset() {
	s.mu.Lock()
	s.bySource = map[netip.Addr]int{}
	s.mu.Unlock()
}

func (s *echoServer) remote(token string) (netip.AddrPort, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ap, ok := s.byToken[token]
	return ap, ok
}

// dialOpts tunes connectN and startLongLived. The zero value is fine.
type dialOpts struct {
	// SrcPorts, if set, makes connection i bind local port SrcPorts[i%len].
	SrcPorts []int
	// Src, if set, binds this local address.
	Src string
	// Timeout per connection (dial + echo); default 2s.
	Timeout time.Duration
	// Parallel is how many connections are in flight at once; default 8.
	Parallel int
	// Interval between a long-lived connection's echoes; default
	// longLivedInterval.
	Interval time.Duration
}

func (o dialOpts) timeout() time.Duration {
	if o.Timeout <= 0 {
		return 2 * time.Second
	}
	return o.Timeout
}

func (o dialOpts) localAddr(i int) *net.TCPAddr {
	if len(o.SrcPorts) == 0 && o.Src == "" {
		return nil
	}
	a := &net.TCPAddr{}
	if o.Src != "" {
		a.IP = net.ParseIP(o.Src)
	}
	if len(o.SrcPorts) > 0 {
		a.Port = o.SrcPorts[i%len(o.SrcPorts)]
	}
	return a
}

func randToken() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// dialIn opens a TCP connection from namespace ns. The socket is created on a
// thread inside ns (nsDo) and keeps that namespace afterwards.
func dialIn(ns, target string, local *net.TCPAddr, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := nsDo(ns, func() error {
		d := net.Dialer{
			Timeout: timeout,
			// SO_REUSEADDR lets a fixed source port be bound again while an
			// earlier socket on it is still closing.
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
				}); err != nil {
					return err
				}
				return serr
			},
		}
		if local != nil {
			d.LocalAddr = local
		}
		var err error
		c, err = d.Dial(tcpNetwork(target), target)
		return err
	})
	return c, err
}

// tcpNetwork is "tcp6" for an "[ipv6]:port" address and "tcp4" otherwise,
// so a socket is never dual-stack by accident.
func tcpNetwork(hostport string) string {
	host, _, err := net.SplitHostPort(hostport)
	if err == nil && strings.Contains(host, ":") {
		return "tcp6"
	}
	return "tcp4"
}

// connectResult is what connectN saw.
type connectResult struct {
	OK, Failed int
	Errors     []error // one per failed connection
	// PerSource counts successful connections by the remote IP the server
	// saw (the NATed source = the link); nil when no server was given.
	PerSource map[netip.Addr]int
	// Remote[i] is connection i's remote address as the server saw it
	// (zero if it failed or no server was given).
	Remote []netip.AddrPort
	// Local[i] is connection i's local address (zero if the dial failed).
	Local []netip.AddrPort
}

// connectN opens n short TCP connections from ns to target ("ip:port"), each
// sending one line and reading its echo. srv (may be nil) is the server
// behind target, used to learn which source each connection arrived from.
func connectN(t testing.TB, ns, target string, srv *echoServer, n int, o dialOpts) connectResult {
	t.Helper()
	if err := mustOwn(ns); err != nil {
		t.Fatal(err)
	}
	par := o.Parallel
	if par <= 0 {
		par = 8
	}
	res := connectResult{Remote: make([]netip.AddrPort, n), Local: make([]netip.AddrPort, n)}
	errs := make([]error, n)
	tokens := make([]string, n)
	prefix := randToken()
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		tokens[i] = fmt.Sprintf("%s-%d", prefix, i)
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			var local netip.AddrPort
			local, errs[i] = echoOnce(ns, target, o.localAddr(i), tokens[i], o.timeout())
			res.Local[i] = local
		}(i)
	}
	wg.Wait()
	if srv != nil {
		res.PerSource = map[netip.Addr]int{}
	}
	for i, err := range errs {
		if err != nil {
			res.Failed++
			res.Errors = append(res.Errors, err)
			continue
		}
		res.OK++
		if srv != nil {
			if ra, ok := srv.remote(tokens[i]); ok {
				res.Remote[i] = ra
				res.PerSource[ra.Addr().Unmap()]++
			}
		}
	}
	return res
}

func echoOnce(ns, target string, local *net.TCPAddr, token string, timeout time.Duration) (netip.AddrPort, error) {
	deadline := time.Now().Add(timeout)
	c, err := dialIn(ns, target, local, timeout)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	la := c.LocalAddr().(*net.TCPAddr).AddrPort()
	_ = c.SetDeadline(deadline)
	msg := token + "\n"
	if _, err := io.WriteString(c, msg); err != nil {
		return la, err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return la, err
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return la, fmt.Errorf("read echo: %w", err)
	}
	if string(got) != msg {
		return la, fmt.Errorf("echo mismatch: sent %q got %q", msg, got)
	}
	return la, nil
}

// connStatus is one long-lived connection's history.
type connStatus struct {
	Local  netip.AddrPort // client side
	Remote netip.AddrPort // as the server saw it (the NATed source); zero without server
	Echoes int            // round trips completed
	MaxRTT time.Duration  // longest wait for one echo
	// Stalled: some echo took longer than stallAfter (or never came).
	Stalled bool
	// Err is the first error other than a stall timeout (nil if none).
	Err error
	// LastEcho: when the last round trip completed.
	LastEcho time.Time
}

const (
	longLivedInterval = 50 * time.Millisecond
	stallAfter        = 2 * time.Second
)

// longLived is a set of connections that each exchange one echo every
// ~50ms until stop.
type longLived struct {
	conns    []net.Conn
	status   []connStatus
	done     chan struct{}
	interval time.Duration
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// startLongLived opens k connections from ns to target (failing the test if
// any cannot be established) and keeps each one busy in its own goroutine.
// Call stop to end them; it also runs in t.Cleanup.
func startLongLived(t testing.TB, ns, target string, srv *echoServer, k int, o dialOpts) *longLived {
	t.Helper()
	l := &longLived{
		conns:    make([]net.Conn, k),
		status:   make([]connStatus, k),
		done:     make(chan struct{}),
		interval: o.Interval,
	}
	if l.interval <= 0 {
		l.interval = longLivedInterval
	}
	for i := 0; i < k; i++ {
		c, err := dialIn(ns, target, o.localAddr(i), o.timeout())
		if err != nil {
			for _, c := range l.conns[:i] {
				c.Close()
			}
			t.Fatalf("long-lived connection %d to %s from %s: %v", i, target, ns, err)
		}
		l.conns[i] = c
		l.status[i].Local = c.LocalAddr().(*net.TCPAddr).AddrPort()
		tok := randToken()
		_ = c.SetDeadline(time.Now().Add(o.timeout()))
		br := bufio.NewReader(c)
		if err := echoToken(c, br, tok); err != nil {
			t.Fatalf("long-lived connection %d: first echo: %v", i, err)
		}
		if srv != nil {
			l.status[i].Remote, _ = srv.remote(tok)
		}
		l.wg.Add(1)
		go l.loop(i, br)
	}
	t.Cleanup(func() { l.stop() })
	return l
}

// echoToken sends tok and reads the line that comes back, which must be tok.
func echoToken(w io.Writer, br *bufio.Reader, tok string) error {
	if _, err := io.WriteString(w, tok+"\n"); err != nil {
		return err
	}
	got, err := br.ReadString('\n')
	if err != nil {
		return err
	}
	if got != tok+"\n" {
		return fmt.Errorf("sent %q, got back %q", tok, strings.TrimSuffix(got, "\n"))
	}
	return nil
}

func (l *longLived) loop(i int, br *bufio.Reader) {
	defer l.wg.Done()
	c, st := l.conns[i], &l.status[i]
	tick := time.NewTicker(l.interval)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-l.done:
			return
		case <-tick.C:
		}
		msg := fmt.Sprintf("%d\n", seq)
		sent := time.Now()
		_ = c.SetDeadline(sent.Add(stallAfter))
		if _, err := io.WriteString(c, msg); err != nil {
			if !l.stopping() {
				st.Err = err
			}
			return
		}
		for {
			line, err := br.ReadString('\n')
			if err == nil {
				if line != msg {
					st.Err = fmt.Errorf("echo mismatch: sent %q got %q", msg, line)
					return
				}
				break
			}
			if l.stopping() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded) {
				// Stalled: keep waiting for the same echo (TCP retransmits),
				// so a connection that recovers is told apart from a dead one.
				st.Stalled = true
				_ = c.SetDeadline(time.Now().Add(stallAfter))
				if l.stopping() { // stop may have set its deadline just before ours
					return
				}
				continue
			}
			st.Err = err
			return
		}
		if rtt := time.Since(sent); rtt > st.MaxRTT {
			st.MaxRTT = rtt
		}
		st.Echoes++
		st.LastEcho = time.Now()
	}
}

func (l *longLived) stopping() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// stop ends all connections and returns each one's history.
func (l *longLived) stop() []connStatus {
	l.stopOnce.Do(func() {
		close(l.done)
		for _, c := range l.conns {
			// Wake up reads blocked on a stalled connection; the loop sees
			// done and does not count this as an error.
			_ = c.SetDeadline(time.Now())
		}
		l.wg.Wait()
		for _, c := range l.conns {
			c.Close()
		}
	})
	return append([]connStatus(nil), l.status...)
}

// ping sends one ICMP echo request from ns to dst and waits up to 1s for the
// reply (like `ping -c1 -W1`; iputils-ping is not on a fresh machine). src ""
// lets the kernel pick the source address; otherwise it is bound. dst may be
// IPv6, with a zone for a link-local address ("fe80::1%wan1").
func ping(ns, src, dst string) error {
	return pingTimeout(ns, src, dst, time.Second)
}

func pingTimeout(ns, src, dst string, timeout time.Duration) error {
	dstIP, err := netip.ParseAddr(dst)
	if err != nil {
		return err
	}
	v6 := dstIP.Is6() && !dstIP.Is4In6()
	network, echo, echoReply := "ip4:icmp", byte(8), byte(0)
	if v6 {
		// The kernel fills in the ICMPv6 checksum of a raw ICMPv6 socket
		// (RFC 3542 3.1), and the pseudo-header needs the source it picks.
		network, echo, echoReply = "ip6:ipv6-icmp", 128, 129
	}
	if src == "" {
		src = "0.0.0.0"
		if v6 {
			src = "::"
		}
	}
	var pc net.PacketConn
	zone := dstIP.Zone()
	if err := nsDo(ns, func() error {
		var err error
		pc, err = net.ListenPacket(network, src)
		if err == nil && zone != "" {
			// The zone names an interface of ns: resolve it here, since
			// WriteTo would look the name up in the namespace of whatever
			// thread it runs on.
			var ifi *net.Interface
			if ifi, err = net.InterfaceByName(zone); err == nil {
				zone = strconv.Itoa(ifi.Index)
			} else {
				pc.Close()
			}
		}
		return err
	}); err != nil {
		return fmt.Errorf("icmp socket in %s: %w", ns, err)
	}
	defer pc.Close()

	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	const seq = 1
	req := []byte{echo, 0, 0, 0, idb[0], idb[1], 0, seq, 'f', 'l', 'o', 'w', 'p', 'i', 'n', '!'}
	if !v6 {
		cs := icmpChecksum(req)
		req[2], req[3] = byte(cs>>8), byte(cs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	dl, _ := ctx.Deadline()
	_ = pc.SetDeadline(dl)
	if _, err := pc.WriteTo(req, &net.IPAddr{IP: dstIP.AsSlice(), Zone: zone}); err != nil {
		return fmt.Errorf("ping %s from %s: %w", dst, ns, err)
	}
	want := dstIP.WithZone("")
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("ping %s from %s (src %s): no reply: %w", dst, ns, src, err)
		}
		// A raw ICMP socket sees every ICMP packet of the namespace: keep
		// only the echo reply to this request.
		m := buf[:n]
		fa, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		if len(m) >= 8 && m[0] == echoReply && binary.BigEndian.Uint16(m[4:]) == id &&
			binary.BigEndian.Uint16(m[6:]) == seq && fa.Unmap() == want {
			return nil
		}
	}
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
