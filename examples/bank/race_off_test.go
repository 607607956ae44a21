//go:build !race

package bank_test

// concTransfers is the number of transfers of each concurrency test.
const concTransfers = 5_000
