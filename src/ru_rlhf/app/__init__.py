"""The online RLHF app: a blind A/B page whose votes flow back into preference_curation."""
