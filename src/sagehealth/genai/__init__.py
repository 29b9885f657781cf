"""Layer 2, generative AI: model providers behind one interface (offline extractive default,
OpenAI-compatible endpoints, in-process llama.cpp) and the versioned prompts they use."""
