// Command benchplot draws the benchmarks that have curves as PNG plots:
// it reads `go test -bench` output (files, or stdin) and writes, into
// -o, each chart of Charts whose benchmark is in the input:
//
//   - bench-transfer.png: commands/s against callers for the executor,
//     the executor with the cache and raw SQL, under FULL and NORMAL
//     (examples/bank/bankbench BenchmarkTransfer);
//   - bench-history.png: cold, snapshot and warm latency against the
//     stream's history (executor BenchmarkDepositByHistory);
//   - bench-managed.png: commands/s against concurrent invocations
//     (functions BenchmarkManagedInstances).
//
// `make bench-plot` runs those benchmarks and this command.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchplot: "+err.Error())
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("benchplot", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("o", "docs", "directory the PNGs are written to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var readers []io.Reader
	for _, name := range fs.Args() {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		readers = append(readers, f)
	}
	if len(readers) == 0 {
		readers = append(readers, stdin)
	}
	points, err := Parse(io.MultiReader(readers...))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return fmt.Errorf("-o: %w", err)
	}
	drawn := 0
	for _, c := range Charts {
		path := filepath.Join(*dir, c.File)
		ok, err := c.Draw(points, path)
		if err != nil {
			return err
		}
		if ok {
			drawn++
			_, _ = fmt.Fprintln(stdout, "wrote", path)
		}
	}
	if drawn == 0 {
		return errors.New("no benchmark with a curve in the input")
	}
	return nil
}
