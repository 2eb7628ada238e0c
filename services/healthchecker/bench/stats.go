package main

import "runtime"

type runtimeStats struct {
	goroutines int
	heapInUse  float64
}

func (s *runtimeStats) read() {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	s.goroutines = runtime.NumGoroutine()
	s.heapInUse = float64(m.HeapInuse) / (1 << 20)
}
