// Package testproc starts the running test binary again as a second OS
// process, for tests that need two processes on one SQLite file. The child
// runs one test, told by environment variables that it is the child; the
// two talk over the child's stdin and stdout in a protocol of the test's
// own.
package testproc

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"testing"

	"github.com/eventcore-go/eventcore/internal/syncbuf"
)

// Child is a started child process.
type Child struct {
	Cmd   *exec.Cmd
	Stdin io.WriteCloser
	// Lines reads the child's stdout line by line (lines up to 64 MiB).
	Lines  *bufio.Scanner
	stderr *syncbuf.Buffer
	stdout io.ReadCloser
}

// Start runs the test binary with only the test named testName (and
// -test.count=1, plus any extra flags), with env added to this process's
// environment. It fails the test when the child cannot start.
func Start(t testing.TB, testName string, env []string, flags ...string) *Child {
	t.Helper()
	args := append([]string{"-test.run=^" + testName + "$", "-test.count=1"}, flags...)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), env...)
	c := &Child{Cmd: cmd, stderr: &syncbuf.Buffer{}}
	cmd.Stderr = c.stderr
	var err error
	if c.Stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if c.stdout, err = cmd.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.Lines = bufio.NewScanner(c.stdout)
	c.Lines.Buffer(make([]byte, 1<<20), 64<<20)
	return c
}

// Stderr returns what the child wrote to stderr so far.
func (c *Child) Stderr() string { return c.stderr.String() }

// CloseAndWait closes the child's stdin, reads whatever it still prints and
// waits for it to exit.
func (c *Child) CloseAndWait() error {
	_ = c.Stdin.Close()
	_, _ = io.Copy(io.Discard, c.stdout)
	return c.Cmd.Wait()
}
