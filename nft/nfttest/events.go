package nfttest

import (
	"flowpin/nft"
	"flowpin/rules/rulestest"
)

// TableEvents is nft.TableEvents fed by the test (see rulestest.Stream):
// Send delivers a notification, Lose ends the subscription as a failed
// monitor does, FailNext fails the next Subscribe calls. The zero value
// is ready to use.
type TableEvents struct {
	rulestest.Stream[nft.TableEvent]
}

// Changed sends that flowpin's table changed.
func (e *TableEvents) Changed() bool {
	return e.Send(nft.TableEvent{What: "nftables change"})
}

// Lose ends the subscription as a failed monitor does: a lost
// TableEvent, then the channel closed.
func (e *TableEvents) Lose() {
	e.End(nft.TableEvent{Lost: true, What: nft.Subscription})
}
