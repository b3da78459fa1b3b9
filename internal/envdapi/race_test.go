//go:build race

package envdapi_test

// raceEnabled: the race detector's shadow memory adds to what a helper touches.
const raceEnabled = true
