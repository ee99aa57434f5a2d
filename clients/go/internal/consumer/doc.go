// Package consumer holds the consumer test: the README's quick start, built in
// a fresh module outside the repository that requires the SDK the README's way
// (a replace to this checkout), run against the real service.
package consumer
