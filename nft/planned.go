package nft

// PlannedRule is one packet rule of a Spec: the chain it is in, its text
// as nft writes it, and the comment that names it in the kernel (Read
// reports rules by their comments).
type PlannedRule struct {
	Chain, Text, Comment string
}

// ChainNames are the names of the spec's chains, in the order they are
// written, the state chain of the records among them.
func (s Spec) ChainNames() []string {
	var out []string
	for _, c := range s.layout().chains {
		out = append(out, c.name)
	}
	return out
}

// Planned lists the spec's packet rules in order: every rule but the
// records.
func (s Spec) Planned() []PlannedRule {
	var out []PlannedRule
	for _, r := range s.layout().rules {
		if !r.record {
			out = append(out, PlannedRule{Chain: r.chain, Text: r.text, Comment: r.comment()})
		}
	}
	return out
}

// UpToDateExceptRecords is UpToDate with the records taken as found:
// whether cur holds the spec's chains, hooks, sets and packet rules.
func (s Spec) UpToDateExceptRecords(cur *Current) bool {
	// Unknown is written as found, so the state chain compares equal
	// whatever it holds, in whatever order.
	s.Records = Records{Unknown: cur.Chains["state"]}
	return s.UpToDate(cur)
}
