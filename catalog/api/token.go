package api

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// minTokenLen is the shortest token LoadToken accepts: 128 bits in hex.
const minTokenLen = 32

// LoadToken returns the bearer token kept in path. With create, a missing
// file is made with a new random token, mode 0600 from the start (the file
// is created exclusively, so no other process sees it half-written or with
// wider rights).
func LoadToken(path string, create bool) (string, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		return newToken(path)
	}
	if err != nil {
		return "", fmt.Errorf("read the API token: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("the API token file %s can be read by others (mode %04o); run: chmod 600 %s", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the API token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < minTokenLen || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("the API token in %s must be one word of at least %d characters (remove the file and a new one is made)", path, minTokenLen)
	}
	return tok, nil
}

func newToken(path string) (string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadToken(path, false) // another process made it first
	}
	if err != nil {
		return "", fmt.Errorf("create the API token: %w", err)
	}
	_, err = f.WriteString(tok + "\n")
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("write the API token: %w", err)
	}
	return tok, nil
}
