package integration

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// browser is headless Chromium driven over the DevTools protocol on a
// pair of pipes (--remote-debugging-pipe: commands in on fd 3, answers
// out on fd 4, each message ended by a NUL byte). Pipes cross network
// namespaces, so Chromium runs inside the router's namespace and reaches
// the daemon on that namespace's localhost, while the test drives it from
// outside. The page runs in real time: its polling and its client-side
// history behave as they do for a person (--screenshot with
// --virtual-time-budget would run the page's clock far ahead of the
// daemon's, and show one sample).
type browser struct {
	cmd     *exec.Cmd
	in      *os.File // our end of Chromium's fd 3
	session string

	mu      sync.Mutex
	next    int
	waiting map[int]chan cdpReply
	log     lockedBuf
	done    chan struct{}
}

type lockedBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.b) < 1<<16 {
		l.b = append(l.b, p...)
	}
	return len(p), nil
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

type cdpReply struct {
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// chromiumPath is Debian's chromium (make browser-deps installs it).
func chromiumPath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (make browser-deps)")
	}
	return p
}

// startBrowser runs headless Chromium in ns with a window of w x h CSS
// pixels at scale 1, one tab attached.
func startBrowser(t testing.TB, ns string, w, h int) *browser {
	t.Helper()
	chromium := chromiumPath(t)
	if err := mustOwn(ns); err != nil {
		t.Fatal(err)
	}
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{in: cmdW, waiting: map[int]chan cdpReply{}, done: make(chan struct{})}
	// --no-sandbox: root in a container, where Chromium's sandbox cannot
	// set itself up. The page is the test's own.
	b.cmd = exec.Command("ip", "netns", "exec", ns, chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
		"--user-data-dir="+t.TempDir(), "--no-first-run", "--no-default-browser-check",
		"--disable-extensions", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
		fmt.Sprintf("--window-size=%d,%d", w, h), "about:blank")
	b.cmd.ExtraFiles = []*os.File{cmdR, outW} // fds 3 and 4
	b.cmd.Stdout, b.cmd.Stderr = &b.log, &b.log
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmdR.Close()
	outW.Close()
	go b.read(outR)
	t.Cleanup(func() {
		_ = b.in.Close() // Chromium exits when its command pipe closes
		select {
		case <-b.done:
		case <-time.After(5 * time.Second):
		}
		_ = b.cmd.Process.Kill()
		_ = b.cmd.Wait()
		if t.Failed() {
			t.Logf("chromium output:\n%s", b.log.String())
		}
	})
	var target struct {
		TargetID string `json:"targetId"`
	}
	b.call(t, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var att struct {
		SessionID string `json:"sessionId"`
	}
	b.call(t, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att)
	b.session = att.SessionID
	b.call(t, b.session, "Emulation.setDeviceMetricsOverride", map[string]any{"width": w, "height": h, "deviceScaleFactor": 1, "mobile": false}, nil)
	return b
}

func (b *browser) read(r *os.File) {
	defer close(b.done)
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		msg, err := br.ReadBytes(0)
		if err != nil {
			return
		}
		var rep cdpReply
		if json.Unmarshal(msg[:len(msg)-1], &rep) != nil || rep.ID == 0 {
			continue // an event
		}
		b.mu.Lock()
		ch := b.waiting[rep.ID]
		delete(b.waiting, rep.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
}

// call sends one command (to the tab's session, or the browser when
// session is empty) and decodes its result into out.
func (b *browser) call(t testing.TB, session, method string, params any, out any) {
	t.Helper()
	if err := b.tryCall(session, method, params, out); err != nil {
		t.Fatalf("%s: %v\nchromium output:\n%s", method, err, b.log.String())
	}
}

func (b *browser) tryCall(session, method string, params any, out any) error {
	b.mu.Lock()
	b.next++
	id := b.next
	ch := make(chan cdpReply, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	data, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if _, err := b.in.Write(append(data, 0)); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	select {
	case rep := <-ch:
		if rep.Error != nil {
			return errors.New(rep.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(rep.Result, out)
		}
		return nil
	case <-b.done:
		return errors.New("chromium exited")
	case <-ctx.Done():
		return errors.New("no answer in 20s")
	}
}

func (b *browser) navigate(t testing.TB, url string) {
	t.Helper()
	var res struct {
		ErrorText string `json:"errorText"`
	}
	b.call(t, b.session, "Page.navigate", map[string]any{"url": url}, &res)
	if res.ErrorText != "" {
		t.Fatalf("navigate %s: %s", url, res.ErrorText)
	}
}

// waitLoaded waits until the tab has loaded a page whose address starts
// with prefix (Page.navigate returns before the new document exists).
func (b *browser) waitLoaded(t testing.TB, prefix string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var res struct {
			Result struct {
				Value string `json:"value"`
			} `json:"result"`
		}
		// Errors (the old document's context going away) just mean not yet.
		err := b.tryCall(b.session, "Runtime.evaluate", map[string]any{"expression": `document.readyState + " " + location.href`, "returnByValue": true}, &res)
		if err == nil && strings.HasPrefix(res.Result.Value, "complete "+prefix) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("page %s not loaded in 10s (%q, %v)", prefix, res.Result.Value, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// eval runs a JavaScript expression in the page and decodes its value
// (returned by value: it must be JSON-serialisable) into out.
func (b *browser) eval(t testing.TB, expr string, out any) {
	t.Helper()
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	b.call(t, b.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &res)
	if res.ExceptionDetails != nil {
		t.Fatalf("eval %s: %s %s", expr, res.ExceptionDetails.Text, res.ExceptionDetails.Exception.Description)
	}
	if err := json.Unmarshal(res.Result.Value, out); err != nil {
		t.Fatalf("eval %s: %v (%s)", expr, err, res.Result.Value)
	}
}

// screenshot is the visible part of the page as PNG.
func (b *browser) screenshot(t testing.TB) []byte {
	t.Helper()
	var res struct {
		Data string `json:"data"`
	}
	b.call(t, b.session, "Page.captureScreenshot", map[string]any{"format": "png"}, &res)
	png, err := base64.StdEncoding.DecodeString(res.Data)
	if err != nil {
		t.Fatal(err)
	}
	return png
}
