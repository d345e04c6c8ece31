package nbd

// BufferMemoryWaiting returns the number of requests waiting for the
// server's buffer memory.
func BufferMemoryWaiting(s *Server) int { return s.bufferMemory().waiting() }
