//! IANA "Internet Key Exchange Version 2 (IKEv2) Parameters" registries used on the wire.
//!
//! Every registry that IANA keeps open gets an `Unknown(..)` catch-all so that a value we do not
//! know survives a decode/encode round trip instead of failing the whole message. Values are
//! written in hex, as the registry assigns them.

macro_rules! registry {
    (
        $(#[$meta:meta])*
        $name:ident: $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this implementation does not know (the registry is open).
            Unknown($repr),
        }

        impl $name {
            /// The IANA value.
            pub fn to_raw(self) -> $repr {
                match self {
                    $( Self::$variant => $value, )*
                    Self::Unknown(v) => v,
                }
            }
        }

        impl From<$repr> for $name {
            fn from(v: $repr) -> Self {
                match v {
                    $( $value => Self::$variant, )*
                    _ => Self::Unknown(v),
                }
            }
        }
    };
}

registry! {
    /// Exchange Types (RFC 7296 §3.1).
    ExchangeType: u8 {
        /// IKE_SA_INIT.
        IkeSaInit = 0x22,
        /// IKE_AUTH.
        IkeAuth = 0x23,
        /// CREATE_CHILD_SA.
        CreateChildSa = 0x24,
        /// INFORMATIONAL.
        Informational = 0x25,
        /// IKE_INTERMEDIATE (RFC 9242).
        IkeIntermediate = 0x2b,
        /// IKE_FOLLOWUP_KE (RFC 9370 §2.2.4).
        IkeFollowupKe = 0x2c,
    }
}

registry! {
    /// Payload Types (RFC 7296 §3.2, RFC 7383 §2.5).
    PayloadType: u8 {
        /// No Next Payload.
        None = 0x00,
        /// Security Association (SA).
        Sa = 0x21,
        /// Key Exchange (KE).
        Ke = 0x22,
        /// Identification - Initiator (IDi).
        IdI = 0x23,
        /// Identification - Responder (IDr).
        IdR = 0x24,
        /// Certificate (CERT).
        Cert = 0x25,
        /// Certificate Request (CERTREQ).
        CertReq = 0x26,
        /// Authentication (AUTH).
        Auth = 0x27,
        /// Nonce (Ni, Nr).
        Nonce = 0x28,
        /// Notify (N).
        Notify = 0x29,
        /// Delete (D).
        Delete = 0x2a,
        /// Vendor ID (V).
        VendorId = 0x2b,
        /// Traffic Selector - Initiator (TSi).
        TsI = 0x2c,
        /// Traffic Selector - Responder (TSr).
        TsR = 0x2d,
        /// Encrypted and Authenticated (SK).
        Sk = 0x2e,
        /// Configuration (CP).
        Cp = 0x2f,
        /// Extensible Authentication (EAP).
        Eap = 0x30,
        /// Encrypted and Authenticated Fragment (SKF, RFC 7383).
        Skf = 0x35,
    }
}

registry! {
    /// Notify Message Types, error (< 0x4000) and status (RFC 7296 §3.10.1 and later RFCs).
    NotifyType: u16 {
        /// UNSUPPORTED_CRITICAL_PAYLOAD.
        UnsupportedCriticalPayload = 0x0001,
        /// INVALID_IKE_SPI.
        InvalidIkeSpi = 0x0004,
        /// INVALID_MAJOR_VERSION.
        InvalidMajorVersion = 0x0005,
        /// INVALID_SYNTAX.
        InvalidSyntax = 0x0007,
        /// INVALID_MESSAGE_ID.
        InvalidMessageId = 0x0009,
        /// INVALID_SPI.
        InvalidSpi = 0x000b,
        /// NO_PROPOSAL_CHOSEN.
        NoProposalChosen = 0x000e,
        /// INVALID_KE_PAYLOAD.
        InvalidKePayload = 0x0011,
        /// AUTHENTICATION_FAILED.
        AuthenticationFailed = 0x0018,
        /// SINGLE_PAIR_REQUIRED.
        SinglePairRequired = 0x0022,
        /// NO_ADDITIONAL_SAS.
        NoAdditionalSas = 0x0023,
        /// INTERNAL_ADDRESS_FAILURE.
        InternalAddressFailure = 0x0024,
        /// FAILED_CP_REQUIRED.
        FailedCpRequired = 0x0025,
        /// TS_UNACCEPTABLE.
        TsUnacceptable = 0x0026,
        /// INVALID_SELECTORS.
        InvalidSelectors = 0x0027,
        /// UNACCEPTABLE_ADDRESSES (RFC 4555 §4.2.2).
        UnacceptableAddresses = 0x0028,
        /// UNEXPECTED_NAT_DETECTED (RFC 4555 §4.2.3).
        UnexpectedNatDetected = 0x0029,
        /// TEMPORARY_FAILURE (RFC 7296 §2.25).
        TemporaryFailure = 0x002b,
        /// CHILD_SA_NOT_FOUND (RFC 7296 §2.25).
        ChildSaNotFound = 0x002c,
        /// STATE_NOT_FOUND (RFC 9370 §2.2.4): an IKE_FOLLOWUP_KE request whose link data the
        /// responder does not know.
        StateNotFound = 0x002f,
        /// INITIAL_CONTACT.
        InitialContact = 0x4000,
        /// SET_WINDOW_SIZE.
        SetWindowSize = 0x4001,
        /// ADDITIONAL_TS_POSSIBLE.
        AdditionalTsPossible = 0x4002,
        /// IPCOMP_SUPPORTED.
        IpcompSupported = 0x4003,
        /// NAT_DETECTION_SOURCE_IP.
        NatDetectionSourceIp = 0x4004,
        /// NAT_DETECTION_DESTINATION_IP.
        NatDetectionDestinationIp = 0x4005,
        /// COOKIE.
        Cookie = 0x4006,
        /// USE_TRANSPORT_MODE.
        UseTransportMode = 0x4007,
        /// HTTP_CERT_LOOKUP_SUPPORTED.
        HttpCertLookupSupported = 0x4008,
        /// REKEY_SA.
        RekeySa = 0x4009,
        /// ESP_TFC_PADDING_NOT_SUPPORTED.
        EspTfcPaddingNotSupported = 0x400a,
        /// NON_FIRST_FRAGMENTS_ALSO.
        NonFirstFragmentsAlso = 0x400b,
        /// MOBIKE_SUPPORTED (RFC 4555).
        MobikeSupported = 0x400c,
        /// UPDATE_SA_ADDRESSES (RFC 4555 §4.2.4).
        UpdateSaAddresses = 0x4010,
        /// COOKIE2 (RFC 4555 §4.2.5).
        Cookie2 = 0x4011,
        /// NO_NATS_ALLOWED (RFC 4555 §4.2.6).
        NoNatsAllowed = 0x4012,
        /// MULTIPLE_AUTH_SUPPORTED (RFC 4739).
        MultipleAuthSupported = 0x4014,
        /// EAP_ONLY_AUTHENTICATION (RFC 5998).
        EapOnlyAuthentication = 0x4021,
        /// CHILDLESS_IKEV2_SUPPORTED (RFC 6023).
        ChildlessIkev2Supported = 0x4022,
        /// IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383).
        Ikev2FragmentationSupported = 0x402e,
        /// SIGNATURE_HASH_ALGORITHMS (RFC 7427).
        SignatureHashAlgorithms = 0x402f,
        /// INTERMEDIATE_EXCHANGE_SUPPORTED (RFC 9242 §3.1).
        IntermediateExchangeSupported = 0x4036,
        /// ADDITIONAL_KEY_EXCHANGE (RFC 9370 §2.2.4): links IKE_FOLLOWUP_KE exchanges to
        /// their CREATE_CHILD_SA.
        AdditionalKeyExchange = 0x4039,
    }
}

impl TransformType {
    /// ADDKE`n` (RFC 9370 §2.2.1: Transform Type 5 + n), for n in 1..=7.
    pub fn addke(n: u8) -> Self {
        Self::from(5 + n)
    }

    /// The n of an ADDKE`n` type.
    pub fn addke_index(self) -> Option<u8> {
        let raw = self.to_raw();
        (6..=12).contains(&raw).then(|| raw - 5)
    }
}

impl NotifyType {
    /// True for error types (RFC 7296 §3.10.1: 0..16383 are errors).
    pub fn is_error(self) -> bool {
        self.to_raw() < 0x4000
    }
}

registry! {
    /// Identification types (RFC 7296 §3.5).
    IdType: u8 {
        /// ID_IPV4_ADDR.
        Ipv4Addr = 0x01,
        /// ID_FQDN.
        Fqdn = 0x02,
        /// ID_RFC822_ADDR.
        Rfc822Addr = 0x03,
        /// ID_IPV6_ADDR.
        Ipv6Addr = 0x05,
        /// ID_DER_ASN1_DN.
        DerAsn1Dn = 0x09,
        /// ID_DER_ASN1_GN.
        DerAsn1Gn = 0x0a,
        /// ID_KEY_ID.
        KeyId = 0x0b,
    }
}

registry! {
    /// Authentication methods (RFC 7296 §3.8, RFC 7427).
    AuthMethod: u8 {
        /// RSA Digital Signature.
        RsaSig = 0x01,
        /// Shared Key Message Integrity Code.
        SharedKeyMic = 0x02,
        /// DSS Digital Signature.
        DssSig = 0x03,
        /// ECDSA with SHA-256 on the P-256 curve (RFC 4754).
        EcdsaP256 = 0x09,
        /// ECDSA with SHA-384 on the P-384 curve (RFC 4754).
        EcdsaP384 = 0x0a,
        /// ECDSA with SHA-512 on the P-521 curve (RFC 4754).
        EcdsaP521 = 0x0b,
        /// Digital Signature (RFC 7427).
        DigitalSignature = 0x0e,
    }
}

registry! {
    /// Certificate encodings (RFC 7296 §3.6).
    CertEncoding: u8 {
        /// PKCS #7 wrapped X.509 certificate.
        Pkcs7 = 0x01,
        /// X.509 Certificate - Signature.
        X509Signature = 0x04,
        /// Certificate Revocation List (CRL).
        Crl = 0x07,
        /// Raw RSA Key.
        RawRsaKey = 0x0b,
        /// Hash and URL of X.509 certificate.
        HashUrlX509 = 0x0c,
        /// Hash and URL of X.509 bundle.
        HashUrlBundle = 0x0d,
    }
}

registry! {
    /// Traffic Selector types (RFC 7296 §3.13.1).
    TsType: u8 {
        /// TS_IPV4_ADDR_RANGE.
        Ipv4AddrRange = 0x07,
        /// TS_IPV6_ADDR_RANGE.
        Ipv6AddrRange = 0x08,
    }
}

registry! {
    /// Security Protocol Identifiers (RFC 7296 §3.3.1).
    ProtocolId: u8 {
        /// IKE.
        Ike = 0x01,
        /// AH.
        Ah = 0x02,
        /// ESP.
        Esp = 0x03,
    }
}

registry! {
    /// Transform types (RFC 7296 §3.3.2).
    TransformType: u8 {
        /// Encryption Algorithm (ENCR).
        Encr = 0x01,
        /// Pseudorandom Function (PRF).
        Prf = 0x02,
        /// Integrity Algorithm (INTEG).
        Integ = 0x03,
        /// Key Exchange Method (KE, formerly D-H group).
        Dh = 0x04,
        /// Extended Sequence Numbers (ESN).
        Esn = 0x05,
        /// Additional Key Exchange 1 (RFC 9370 §2.2.1).
        Addke1 = 0x06,
        /// Additional Key Exchange 2.
        Addke2 = 0x07,
        /// Additional Key Exchange 3.
        Addke3 = 0x08,
        /// Additional Key Exchange 4.
        Addke4 = 0x09,
        /// Additional Key Exchange 5.
        Addke5 = 0x0a,
        /// Additional Key Exchange 6.
        Addke6 = 0x0b,
        /// Additional Key Exchange 7.
        Addke7 = 0x0c,
    }
}

registry! {
    /// Configuration payload types (RFC 7296 §3.15).
    CfgType: u8 {
        /// CFG_REQUEST.
        Request = 0x01,
        /// CFG_REPLY.
        Reply = 0x02,
        /// CFG_SET.
        Set = 0x03,
        /// CFG_ACK.
        Ack = 0x04,
    }
}

/// Transform attribute type Key Length (RFC 7296 §3.3.5), always TV format.
pub const ATTR_KEY_LENGTH: u16 = 0x000e;

/// Header flag: sender is the original initiator (RFC 7296 §3.1).
pub const FLAG_INITIATOR: u8 = 0x08;
/// Header flag: sender can speak a higher major version (RFC 7296 §3.1).
pub const FLAG_VERSION: u8 = 0x10;
/// Header flag: this message is a response (RFC 7296 §3.1).
pub const FLAG_RESPONSE: u8 = 0x20;

/// IKEv2 version octet: major 2, minor 0 (RFC 7296 §3.1).
pub const IKE_VERSION: u8 = 0x20;
