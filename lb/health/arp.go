package health

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
)

// ARPProber asks the link's gateway for its link-layer address: an ARP
// request (IPv4) or an NDP neighbour solicitation (IPv6) on the link's
// interface. A reply is an answer: the modem or router on the LAN side
// is there, which is the cheapest check of it and needs no IP route.
type ARPProber struct {
	iface string
	ipv6  bool
	ifi   *net.Interface
	v4    *arp.Client
	v6    *ndp.Conn
	// addr6 is the link-local address the solicitations come from.
	addr6 netip.Addr
	// reopen: the last round lost, and the socket is opened afresh
	// before the next one. The ARP client took the interface's address
	// (its requests' sender) when it was opened: after a new DHCP lease a
	// gateway that checks the sender (rp_filter) would never answer.
	reopen bool
}

// NewARPProber opens a packet socket for ARP on iface, or with v6 an
// ICMPv6 socket on its link-local address (needs CAP_NET_RAW).
func NewARPProber(iface string, v6 bool) (*ARPProber, error) {
	p := &ARPProber{iface: iface, ipv6: v6}
	if err := p.open(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *ARPProber) open() error {
	iface, v6 := p.iface, p.ipv6
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return fmt.Errorf("arp probe on %s: %w", iface, err)
	}
	if len(ifi.HardwareAddr) == 0 {
		return fmt.Errorf("arp probe on %s: the interface has no link-layer address (point-to-point?)", iface)
	}
	p.ifi = ifi
	if v6 {
		c, addr, err := ndp.Listen(ifi, ndp.LinkLocal)
		if err != nil {
			return fmt.Errorf("ndp probe on %s: %w", iface, err)
		}
		p.v6, p.addr6 = c, addr
		return nil
	}
	c, err := arp.Dial(ifi)
	if err != nil {
		return fmt.Errorf("arp probe on %s: %w", iface, err)
	}
	p.v4 = c
	return nil
}

// Close closes the socket.
func (p *ARPProber) Close() {
	if p.v4 != nil {
		p.v4.Close()
		p.v4 = nil
	}
	if p.v6 != nil {
		p.v6.Close()
		p.v6 = nil
	}
}

// Probe asks for each target (the gateway) in turn, each within what is
// left of timeout.
func (p *ARPProber) Probe(targets []netip.Addr, timeout time.Duration) Round {
	r := Round{Sent: len(targets)}
	if p.reopen {
		p.Close()
		if err := p.open(); err != nil {
			// Still reopening next round; the daemon reopens a prober
			// whose interface went away (ENODEV) itself.
			r.Err = err
			return r
		}
		p.reopen = false
	}
	deadline := time.Now().Add(timeout)
	var rtts []time.Duration
	for _, tgt := range targets {
		start := time.Now()
		var err error
		if p.ipv6 {
			err = p.solicit(tgt, deadline)
		} else {
			err = p.request(tgt, deadline)
		}
		if err == nil {
			rtts = append(rtts, time.Since(start))
			continue
		}
		r.Lost = append(r.Lost, tgt)
		var ne net.Error
		if !(errors.As(err, &ne) && ne.Timeout()) {
			if r.Cause == "" {
				r.Cause = err.Error()
			}
		}
	}
	r.Answered, r.RTT = len(rtts), Median(rtts)
	p.reopen = r.Answered < r.Sent
	if r.Answered < r.Sent && r.Cause == "" {
		r.Cause = "no reply"
		if p.ipv6 {
			r.Cause = "no neighbour advertisement"
		}
	}
	return r
}

func (p *ARPProber) request(tgt netip.Addr, deadline time.Time) error {
	if !tgt.Is4() {
		return fmt.Errorf("%s is not IPv4", tgt)
	}
	if err := p.v4.SetDeadline(deadline); err != nil {
		return err
	}
	_, err := p.v4.Resolve(tgt)
	return err
}

func (p *ARPProber) solicit(tgt netip.Addr, deadline time.Time) error {
	tgt = tgt.WithZone("")
	snm, err := ndp.SolicitedNodeMulticast(tgt)
	if err != nil {
		return err
	}
	if err := p.v6.SetDeadline(deadline); err != nil {
		return err
	}
	m := &ndp.NeighborSolicitation{
		TargetAddress: tgt,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: p.ifi.HardwareAddr}},
	}
	if err := p.v6.WriteTo(m, nil, snm); err != nil {
		return err
	}
	for {
		msg, _, _, err := p.v6.ReadFrom()
		if err != nil {
			return err
		}
		if na, ok := msg.(*ndp.NeighborAdvertisement); ok && na.TargetAddress.WithZone("") == tgt {
			return nil
		}
	}
}
