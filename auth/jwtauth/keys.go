package jwtauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ParsePublicKey reads the public key that verifies tokens from PEM: a
// "PUBLIC KEY" (PKIX, as `openssl pkey -pubout` writes it), an
// "RSA PUBLIC KEY" (PKCS #1) or a "CERTIFICATE" holding one. The key must
// be RSA, ECDSA or Ed25519. A private key is refused: Myxi only verifies.
func ParsePublicKey(pemData []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("no PEM block found (want -----BEGIN PUBLIC KEY-----)")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("found a %s: give Myxi the public key only (openssl pkey -in key.pem -pubout)", block.Type)
	default:
		return nil, fmt.Errorf("PEM block %q is not a public key or certificate", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		return k, nil
	case *ecdsa.PublicKey:
		if fits, _ := familyOf(k); !fits("ES256") && !fits("ES384") && !fits("ES512") {
			return nil, fmt.Errorf("ECDSA curve %s is not usable with JWT (want P-256, P-384 or P-521)", k.Curve.Params().Name)
		}
		return k, nil
	case ed25519.PublicKey:
		return k, nil
	}
	return nil, fmt.Errorf("unsupported public key type %T (want RSA, ECDSA or Ed25519)", key)
}
