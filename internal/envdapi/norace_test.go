//go:build !race

package envdapi_test

const raceEnabled = false
