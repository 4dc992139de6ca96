"""The emotion vocabulary of MSP-Podcast, shared by every stage."""

# The 8 consensus classes in the order used for soft targets, logits and posteriors.
CLASS_LETTERS = ("A", "S", "H", "U", "F", "D", "C", "N")
CLASS_NAMES = ("Angry", "Sad", "Happy", "Surprise", "Fear", "Disgust", "Contempt", "Neutral")
NAME_TO_LETTER = dict(zip(CLASS_NAMES, CLASS_LETTERS, strict=True))
LETTER_TO_INDEX = {letter: i for i, letter in enumerate(CLASS_LETTERS)}
NUM_CLASSES = len(CLASS_LETTERS)

# Consensus letters outside the 8 classes: Other, and no agreement.
AMBIGUOUS_LETTERS = ("O", "X")
ALL_CONSENSUS_LETTERS = CLASS_LETTERS + AMBIGUOUS_LETTERS

# Emotional attributes (multitask targets), each a mean rating in [1, 7].
ATTRIBUTES = ("act", "val", "dom")
ATTRIBUTE_RANGE = (1.0, 7.0)
