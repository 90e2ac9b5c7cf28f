package wire

// DiscoverRequest asks for the services of a friend zone a device may
// call. From a device to its hub, Zone names the friend; from hub to hub,
// FromDevice and FromApp say who asks (the hub sets FromDevice).
type DiscoverRequest struct {
	Zone       string `cbor:"1,keyasint,omitempty"`
	FromDevice string `cbor:"2,keyasint,omitempty"`
	FromApp    string `cbor:"3,keyasint,omitempty"`
}

// DiscoveredService is one service in a DiscoverResponse.
type DiscoveredService struct {
	Device        string   `cbor:"1,keyasint"`
	App           string   `cbor:"2,keyasint"`
	Service       string   `cbor:"3,keyasint"`
	Description   string   `cbor:"4,keyasint,omitempty"`
	Methods       []string `cbor:"5,keyasint,omitempty"`
	TokenRequired bool     `cbor:"6,keyasint,omitempty"`
}

// DiscoverResponse lists the services the hoster's policy lets the asker
// call, or says why not.
type DiscoverResponse struct {
	Services []DiscoveredService `cbor:"1,keyasint,omitempty"`
	Status   CallStatus          `cbor:"2,keyasint,omitempty"`
	Message  string              `cbor:"3,keyasint,omitempty"`
}

const (
	// MaxDiscoverFrame bounds a listing: a zone's few hundred services.
	MaxDiscoverFrame = 1 << 20
)
