package rulestest

import (
	"net/netip"
	"sync"
)

// SocketOwners is rules.SocketOwners over a table the test fills with
// Own. The zero value knows no socket.
type SocketOwners struct {
	mu     sync.Mutex
	owners map[[2]netip.AddrPort]uint32
	asked  int
}

// Own records that uid owns the client's end of client->server.
func (s *SocketOwners) Own(server, client netip.AddrPort, uid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owners == nil {
		s.owners = map[[2]netip.AddrPort]uint32{}
	}
	s.owners[[2]netip.AddrPort{server, client}] = uid
}

// ClientUID implements the contract of rules.SocketOwners.ClientUID.
func (s *SocketOwners) ClientUID(server, client netip.AddrPort) (uint32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked++
	uid, ok := s.owners[[2]netip.AddrPort{server, client}]
	return uid, ok
}

// Asked counts the lookups made.
func (s *SocketOwners) Asked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked
}
