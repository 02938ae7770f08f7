package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"flowpin/lb/ctl"
	"flowpin/lb/daemon/operator"
)

// LinkSetter is a Source that takes operators' link modes (flowpin link).
type LinkSetter interface {
	SetLink(ctx context.Context, name string, m operator.Mode, force bool) (operator.Entry, error)
}

// linkHandler answers POST /links/{name}/{mode}[?force=1]: root only, as
// for reload (the kernel names the caller: SO_PEERCRED); 200 with the
// entry set once applied, 404 for a link the config does not have, 400
// for a mode that is none, 409 when refused.
func linkHandler(s LinkSetter) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if uid, ok := req.Context().Value(peerUIDKey{}).(uint32); !ok || uid != 0 {
			http.Error(w, "only root may set a link's mode", http.StatusForbidden)
			return
		}
		e, err := s.SetLink(req.Context(), req.PathValue("name"), operator.Mode(req.PathValue("mode")), req.URL.Query().Get("force") == "1")
		switch {
		case errors.Is(err, ErrUnknownLink):
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		case errors.Is(err, ErrBadMode):
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case errors.Is(err, ErrLastLink):
			http.Error(w, err.Error(), http.StatusConflict)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ctl.LinkMode{Mode: string(e.Mode), Since: e.Since})
	}
}
