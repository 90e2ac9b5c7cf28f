package peer

import (
	zsync "github.com/pzone/pzone/sync"
)

// StoreFiles are the bbolt files of a device's data directory, which
// pzp compact compacts offline.
func StoreFiles() []string { return []string{DBName, zsync.FileName} }
