"""The SaaS SDK. `saas.sdk.adapter` holds the trigger helpers adapters print with (stdlib only)."""
