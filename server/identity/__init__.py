"""Who is talking: accounts of the people on the chat page, their sessions and one-time sign-in links, and the API
keys that apps and people hold. Everything lives in Redis, so that every replica knows the same principals; a
secret (password, session token, link token, API key) is never stored, only its hash."""
