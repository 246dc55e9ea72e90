//! SIP: every slot registers as an extension on the PBX (6xxx AUTO, 7xxx MF,
//! 8xxx LS) and bridges calls between SIP/RTP and its device.
