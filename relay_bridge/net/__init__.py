"""Network clients of the bridge: the SSRF-safe HTTP client, media fetched for ``play``, and the
end-of-session callbacks."""
