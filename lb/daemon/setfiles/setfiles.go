// Package setfiles is the daemon's watcher of the config's set files: when
// one changes, it asks for a reload, which reads the files again and
// applies the difference (only a changed file's set is rewritten). A file
// with a bad line makes the reload fail with the file, the line and the
// value; the daemon runs on, and the set keeps the elements it had.
package setfiles

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"

	"flowpin/lb/config"
)

// Settle is how long the files must be quiet before the reload: a file
// written in pieces, or several files replaced one after the other, give
// one reload.
const Settle = 300 * time.Millisecond

// Watch watches files until ctx ends, calling reload once they have
// settled after a change. It watches their directories, not the files:
// editors and downloaders write a new file and rename it over the old one,
// which a watch on the old file's inode would never see.
func Watch(ctx context.Context, files []string, reload func() error, log *slog.Logger) error {
	return watch(ctx, files, nil, reload, log)
}

// WatchSince is Watch, for files last read as stamps says (Stamps): a
// file that is no longer what was read once the watch is set up gives a
// reload too. The daemon starts a watcher for each config it runs, after
// the reload that read the files, and stops the one before: a change made
// during that reload is seen by no watcher's events. Stamps should be of
// the last read, whichever config it was for: a config that was read but
// failed to apply (the daemon went back to the one before) read the files
// as they are, and a reload for it again would fail again.
func WatchSince(ctx context.Context, files []string, stamps map[string]string, reload func() error, log *slog.Logger) error {
	return watch(ctx, files, stamps, reload, log)
}

// Stamps are the stamps of c's set files as Load read them.
func Stamps(c *config.Config) map[string]string {
	out := map[string]string{}
	for _, s := range c.Sets {
		for j, f := range s.Files {
			if j < len(s.Stamps) {
				out[f] = s.Stamps[j]
			}
		}
	}
	return out
}

func watch(ctx context.Context, files []string, stamps map[string]string, reload func() error, log *slog.Logger) error {
	if len(files) == 0 {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	// A symlinked file (a list an updater keeps elsewhere) changes where
	// it points to: that file and its directory are watched too. A
	// reload starts a new watcher, which follows a symlink that moved.
	files = slices.Clone(files)
	for _, f := range files {
		if t, err := filepath.EvalSymlinks(f); err == nil && t != f && !slices.Contains(files, t) {
			files = append(files, t)
		}
	}
	var dirs []string
	for _, f := range files {
		if d := filepath.Dir(f); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
			if err := w.Add(d); err != nil {
				log.Warn("cannot watch a set file's directory; reload by hand after changing it", "dir", d, "err", err)
			}
		}
	}
	var timer <-chan time.Time
	for f, was := range stamps {
		if fi, err := os.Stat(f); err != nil || config.FileStamp(fi) != was {
			timer = time.After(Settle)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if slices.Contains(files, filepath.Clean(ev.Name)) && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename|fsnotify.Remove) != 0 {
				timer = time.After(Settle)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// An overflow lost events: reading the files again is right
			// whatever they were.
			log.Warn("set file watcher", "err", err)
			timer = time.After(Settle)
		case <-timer:
			timer = nil
			log.Info("a set file changed; reloading")
			if err := reload(); err != nil {
				log.Error("set file change not applied; the sets keep their elements", "err", err)
			}
		}
	}
}

// FilesOf are the files of the config's file sets.
func FilesOf(c *config.Config) []string {
	var out []string
	for _, s := range c.Sets {
		out = append(out, s.Files...)
	}
	return out
}
