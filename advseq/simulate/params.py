"""The simulator's parameters. The dataset card prints these values, so they are the single
source of truth for both the data and its documentation."""

#: posting window: users start between 2019-01-01 and 2023-01-01 (UTC)
START_MIN, START_MAX = 1546300800, 1672531200
#: mean words per post is drawn per user from this range, the same for both classes
POST_WORDS_MEAN = (9.0, 22.0)
POST_WORDS_BOUNDS = (8, 40)
#: malicious account kinds and their shares among malicious users
MALICIOUS_KINDS = {"promoter": 0.40, "attacker": 0.30, "sleeper": 0.30}
#: per-user share of posts about the target items (sponsor's or its competitors')
TARGET_FOCUS = {"promoter": (0.4, 0.75), "attacker": (0.35, 0.65), "sleeper": (0.2, 0.4)}
#: per-user share of posts with a promotional or abusive sentence
SPAM_RATE = {"promoter": (0.3, 0.6), "attacker": (0.3, 0.6), "sleeper": (0.05, 0.15)}
#: per-user share of positive posts (the rest is half mixed, half negative)
POSITIVITY = (0.45, 0.9)
#: probability that a malicious user's interests include the sponsor's category
SPONSOR_IN_INTERESTS = 0.6
#: malicious users' superlative rate on their sponsor's own items
HYPE_RATE = 0.3
#: probability that a sponsor is one of the few "shill-prone" brands of its category
SPONSOR_FROM_SHILL_PRONE = 0.75
#: every user's per-post rate of superlatives ("best ... i have ever owned")
SUPERLATIVE_RATE = (0.03, 0.10)
#: every user's per-post rate of mentioning a sale or a store
DEAL_RATE = (0.0, 0.06)
#: share of benign users loyal to one brand, and how often they pick it
BENIGN_FAN_SHARE = 0.3
FAN_FOCUS = (0.3, 0.7)
#: probability that a user's interests drift once (one favourite category is replaced)
DRIFT_PROB = 0.4
#: probability of a random category outside the user's interests
EXPLORE_PROB = 0.08
#: probability of returning to an item reviewed before (besides the final item)
RETURN_PROB = (0.03, 0.15)
#: target share of non-final posts about the final post's item
RELEVANT_SHARE = {"benign": (0.1, 0.5), "malicious": (0.15, 0.55)}
#: probability that those posts form one block just before the final post
RELEVANT_BLOCK_PROB = 0.75
#: timing: P(next post in the same session); session gaps (minutes); other gaps (days)
BURST_PROB = {"benign": (0.05, 0.5), "promoter": (0.15, 0.65), "attacker": (0.15, 0.65),
              "sleeper": (0.05, 0.5)}
SESSION_GAP_MIN = {"benign": (10.0, 120.0), "malicious": (3.0, 60.0)}
OTHER_GAP_DAYS = {"benign": (2.0, 14.0), "malicious": (1.0, 12.0)}
