"""Special tokens and input templates of the two model families.

BERT:    [CLS] A [SEP]            pair: [CLS] A [SEP] B [SEP]   (token types 0/1)
RoBERTa: <s> A </s>               pair: <s> A </s></s> B </s>
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    pad: str
    unk: str
    cls: str  # also the BOS of RoBERTa
    sep: str  # also the EOS of RoBERTa
    mask: str
    token_types: bool  # BERT feeds segment ids; RoBERTa does not

    @property
    def specials(self):
        """Specials in the order they get the first ids."""
        if self.name == "bert":
            return [self.pad, self.unk, self.cls, self.sep, self.mask]
        return [self.cls, self.pad, self.sep, self.unk, self.mask]  # RoBERTa's 0..3, mask 4

    def wrapper_kwargs(self) -> dict:
        """Special-token arguments of transformers' PreTrainedTokenizerFast."""
        kw = dict(pad_token=self.pad, unk_token=self.unk, cls_token=self.cls,
                  sep_token=self.sep, mask_token=self.mask)
        if self.name == "roberta":
            kw.update(bos_token=self.cls, eos_token=self.sep)
        names = ["input_ids", "token_type_ids", "attention_mask"] if self.token_types \
            else ["input_ids", "attention_mask"]
        kw["model_input_names"] = names
        return kw

    def post_processor(self, tokenizer, byte_level: bool):
        from tokenizers import processors

        cls_id, sep_id = tokenizer.token_to_id(self.cls), tokenizer.token_to_id(self.sep)
        if self.name == "roberta" and byte_level:
            # trims the byte-level leading-space offsets like roberta-base
            return processors.RobertaProcessing((self.sep, sep_id), (self.cls, cls_id))
        if self.name == "bert":
            single, pair = f"{self.cls} $A {self.sep}", f"{self.cls} $A {self.sep} $B:1 {self.sep}:1"
        else:
            single, pair = f"{self.cls} $A {self.sep}", f"{self.cls} $A {self.sep} {self.sep} $B {self.sep}"
        return processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=[(self.cls, cls_id), (self.sep, sep_id)])


BERT = Family("bert", pad="[PAD]", unk="[UNK]", cls="[CLS]", sep="[SEP]", mask="[MASK]", token_types=True)
ROBERTA = Family("roberta", pad="<pad>", unk="<unk>", cls="<s>", sep="</s>", mask="<mask>", token_types=False)
FAMILIES = {"bert": BERT, "roberta": ROBERTA}
# WordPiece is BERT's; byte-level BPE is RoBERTa's; sentencepiece models take
# RoBERTa's specials by default, as XLM-R does.
DEFAULT_FAMILY = {"wordpiece": "bert", "bpe": "roberta", "unigram": "roberta", "spm-bpe": "roberta"}
