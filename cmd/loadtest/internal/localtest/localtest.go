// Package localtest runs the local runner (package local, a main) as a
// child process for the load tool's tests: it builds the binary once per
// test binary and starts it on a free port of 127.0.0.1 with its
// databases in the test's temporary directory.
package localtest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/internal/syncbuf"
)

var (
	buildOnce sync.Once
	buildDir  string
	binary    string
	buildErr  error
)

// build compiles ./local of the module into a temporary directory.
func build() (string, error) {
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("the go tool is needed to build the local runner: %w", err)
			return
		}
		if buildDir, err = os.MkdirTemp("", "loadtest-local-"); err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(buildDir, "local")
		cmd := exec.Command(goTool, "build", "-o", binary, "./local")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./local: %w\n%s", err, out)
		}
	})
	return binary, buildErr
}

// Main runs the tests of a package that starts local runners, then
// removes the binary they shared; call it as the package's TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// Cleanup removes the built binary (Main calls it).
func Cleanup() {
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// Runner is a started local runner.
type Runner struct {
	// URL is its base URL, http://127.0.0.1:PORT.
	URL    string
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
	done   chan error
}

// Start builds and starts a local runner with its databases in a new
// t.TempDir() (synchronous NORMAL, to spare the shared machine's disk) and
// env added ("NAME=value"). It interrupts the runner when the test ends and
// logs the runner's stderr if the test failed.
func Start(t testing.TB, env ...string) *Runner {
	t.Helper()
	bin, err := build()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EVENTCORE_") { // only what the test sets
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env,
		"EVENTCORE_DB="+filepath.Join(dir, "events.db"),
		"EVENTCORE_READ_DB="+filepath.Join(dir, "projections.db"),
		"EVENTCORE_SYNC=normal",
	)
	cmd.Env = append(cmd.Env, env...)
	r := &Runner{cmd: cmd, stderr: &syncbuf.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = r.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- cmd.Wait() }()
	t.Cleanup(func() { r.stop(t) })

	// It prints "eventcore local runner on http://HOST:PORT" once it
	// listens; the rest of its stdout is drained so it never blocks.
	ready := make(chan string, 1)
	go func() {
		lines := bufio.NewScanner(stdout)
		for lines.Scan() {
			if u, ok := strings.CutPrefix(lines.Text(), "eventcore local runner on "); ok {
				ready <- u
			}
		}
	}()
	select {
	case r.URL = <-ready:
	case err := <-r.done:
		r.done <- err
		t.Fatalf("the local runner ended before it listened: %v\n%s", err, r.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("the local runner did not listen within 60s\n%s", r.stderr.String())
	}
	return r
}

// stop interrupts the runner and waits for it; it kills it after 20s.
func (r *Runner) stop(t testing.TB) {
	_ = r.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-r.done:
		if err != nil && !t.Failed() {
			t.Errorf("the local runner exited with %v\n%s", err, r.stderr.String())
		}
	case <-time.After(20 * time.Second):
		_ = r.cmd.Process.Kill()
		t.Errorf("the local runner did not stop within 20s of an interrupt; killed: %v", <-r.done)
	}
	if t.Failed() {
		t.Logf("local runner stderr:\n%s", r.stderr.String())
	}
}
