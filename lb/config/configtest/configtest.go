// Package configtest holds configs that the tests of several packages share.
package configtest

import (
	"testing"

	"flowpin/lb/config"
)

// TwoLinks is a dual-WAN NAT box: isp1 on wan1 (weight 3) and isp2 on wan2.
const TwoLinks = `links:
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
`

// MustParse parses y as f.yaml or fails the test.
func MustParse(t testing.TB, y string) *config.Config {
	t.Helper()
	c, err := config.Parse("f.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
