//go:build race

package bank_test

// Under the race detector every SQLite call costs many times more: 5,000
// transfers take minutes on two CPUs. The concurrency tests run fewer
// transfers under -race; `make test` also runs them at full size without it.
const concTransfers = 800
