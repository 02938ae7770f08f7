package apply

import "flowpin/lb/config"

var _ config.AppliedReader = (*Kernel)(nil)

// AppliedLinks reads each link's mark and table as last applied from the
// records in flowpin's table, for config.Resolve. Two records for one
// name: the last counts.
func (k *Kernel) AppliedLinks() (map[string]config.Applied, error) {
	cur, err := k.NFT.Read()
	if err != nil {
		return nil, err
	}
	out := map[string]config.Applied{}
	for _, l := range cur.Records.Links {
		out[l.Name] = config.Applied{Mark: l.Mark, Table: l.Table}
	}
	return out, nil
}
