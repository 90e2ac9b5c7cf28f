package certs

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string // "" for valid
	}{
		{"a", ""},
		{"0", ""},
		{"phone", ""},
		{"hub", ""},
		{"my-laptop-2", ""},
		{"a--b", ""},
		{"9lives", ""},
		{strings.Repeat("x", 63), ""},
		{"", `invalid device name "": use 1-63 lower-case letters, digits and '-'`},
		{strings.Repeat("x", 64), "use 1-63"},
		{"Phone!", `invalid device name "Phone!": use 1-63 lower-case letters, digits and '-'`},
		{"Phone", "use 1-63"},
		{"my phone", "use 1-63"},
		{"my_phone", "use 1-63"},
		{"my.phone", "use 1-63"},
		{"téléphone", "use 1-63"},
		{"-phone", `invalid device name "-phone": it must not start or end with '-'`},
		{"phone-", "must not start or end with '-'"},
		{"-", "must not start or end with '-'"},
	}
	for _, tt := range tests {
		err := ValidateName("device", tt.name)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("ValidateName(%q) = %v, want nil", tt.name, err)
		case tt.wantErr != "" && err == nil:
			t.Errorf("ValidateName(%q) = nil, want error", tt.name)
		case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
			t.Errorf("ValidateName(%q) = %q, want it to contain %q", tt.name, err, tt.wantErr)
		}
	}
	if err := ValidateName("zone", "Home"); err == nil || !strings.Contains(err.Error(), "invalid zone name") {
		t.Errorf("ValidateName(zone) error %v does not say zone", err)
	}
}

func TestIdentityStrings(t *testing.T) {
	id := Identity{Zone: goldenZoneID, Device: "phone"}
	if got, want := id.URI(), "pz://GOPC76IXMMCQPNVEEO244CCOFBOR7JS5E/phone"; got != want {
		t.Errorf("URI() = %q, want %q", got, want)
	}
	if got, want := id.String(), "phone@GOPC-76IX-MMCQ-PNVE-EO24-4CCO-FBOR-7JS5-E"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestIdentityFromCert(t *testing.T) {
	c := goldenZoneID.Compact()
	other := randomZoneID(t).Compact()
	tests := []struct {
		name    string
		uris    []string
		want    Identity
		wantErr string
	}{
		{name: "device", uris: []string{"pz://" + c + "/phone"}, want: Identity{goldenZoneID, "phone"}},
		{name: "hub", uris: []string{"pz://" + c + "/hub"}, want: Identity{goldenZoneID, HubDevice}},
		{name: "none", wantErr: "names no pz:// URI"},
		{name: "two", uris: []string{"pz://" + c + "/phone", "pz://" + other + "/phone"}, wantErr: "2 URI SANs"},
		{name: "pz and https", uris: []string{"pz://" + c + "/phone", "https://example.com/"}, wantErr: "2 URI SANs"},
		{name: "other scheme", uris: []string{"https://" + c + "/phone"}, wantErr: "scheme is not pz"},
		{name: "opaque", uris: []string{"pz:" + c + "/phone"}, wantErr: "not of the form"},
		{name: "userinfo", uris: []string{"pz://me@" + c + "/phone"}, wantErr: "user info"},
		{name: "port", uris: []string{"pz://" + c + ":443/phone"}, wantErr: "port"},
		{name: "query", uris: []string{"pz://" + c + "/phone?x=1"}, wantErr: "query"},
		{name: "empty query", uris: []string{"pz://" + c + "/phone?"}, wantErr: "query"},
		{name: "fragment", uris: []string{"pz://" + c + "/phone#x"}, wantErr: "fragment"},
		{name: "bad zone", uris: []string{"pz://" + c[:32] + "A/phone"}, wantErr: "check character does not match"},
		{name: "short zone", uris: []string{"pz://ABCD/phone"}, wantErr: "4 characters, want 33"},
		{name: "display zone", uris: []string{"pz://" + string(goldenZoneID) + "/phone"}, wantErr: "not in compact form"},
		{name: "lower-case zone", uris: []string{"pz://" + strings.ToLower(c) + "/phone"}, wantErr: "not in compact form"},
		{name: "no path", uris: []string{"pz://" + c}, wantErr: "names no device"},
		{name: "root path", uris: []string{"pz://" + c + "/"}, wantErr: "names no device"},
		{name: "nested path", uris: []string{"pz://" + c + "/a/b"}, wantErr: "invalid device name"},
		{name: "bad device", uris: []string{"pz://" + c + "/Phone"}, wantErr: "invalid device name"},
		{name: "escaped device", uris: []string{"pz://" + c + "/%70hone"}, wantErr: "canonical form"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := &x509.Certificate{}
			for _, s := range tt.uris {
				u, err := url.Parse(s)
				if err != nil {
					t.Fatalf("url.Parse(%q): %v", s, err)
				}
				cert.URIs = append(cert.URIs, u)
			}
			got, err := IdentityFromCert(cert)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("IdentityFromCert(%v) = %v, want error containing %q", tt.uris, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("IdentityFromCert(%v) error %q does not contain %q", tt.uris, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("IdentityFromCert(%v): %v", tt.uris, err)
			}
			if got != tt.want {
				t.Fatalf("IdentityFromCert(%v) = %v, want %v", tt.uris, got, tt.want)
			}
		})
	}
}
